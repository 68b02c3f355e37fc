"""Secret redaction and size bounds of everything that leaves a process."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.exceptions import redaction
from backend.exceptions.redaction import (
    MARK,
    MAX_MESSAGE_CHARS,
    MAX_STACK_CHARS,
    add_secrets,
    bound,
    redact,
    redact_data,
    redact_message,
    redact_stack,
    set_env_secrets,
)


@pytest.fixture(autouse=True)
def no_env_secrets() -> Iterator[None]:
    """Module globals: start and end every test with no remembered secrets."""
    set_env_secrets({})
    yield
    set_env_secrets({})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Incorrect API key provided: sk-abcdefghijklmnop1234. Check it.",
            "Incorrect API key provided: [REDACTED]. Check it.",
            id="sk-key",
        ),
        pytest.param("key sk-proj-AbCdEf0123456789_xyz-QQ leaked", "key [REDACTED] leaked", id="sk-proj-key"),
        pytest.param(
            "x-api-key sk-ant-api03-AbCdEf0123456789-xyz_QQAA was rejected",
            "x-api-key [REDACTED] was rejected",
            id="sk-ant-key",
        ),
        pytest.param(
            "GET https://api.example.com/v1?api_key=abcd1234SECRET&x=1",
            "GET https://api.example.com/v1?api_key=[REDACTED]&x=1",
            id="query-api_key-keeps-x",
        ),
        pytest.param(
            "https://maps.example.com/geo?key=AIzaSyD-123456&lang=en",
            "https://maps.example.com/geo?key=[REDACTED]&lang=en",
            id="query-key",
        ),
        pytest.param(
            "https://hooks.example.com/cb?id=7&token=tok_9f8e7d6c5b",
            "https://hooks.example.com/cb?id=7&token=[REDACTED]",
            id="query-token",
        ),
        pytest.param(
            "refresh failed: access_token=ya29.a0AfH6SM&expires_in=3599",
            "refresh failed: access_token=[REDACTED]&expires_in=3599",
            id="access_token",
        ),
        pytest.param(
            "could not connect to postgresql://user:hunter2@db/x",
            "could not connect to postgresql://user:[REDACTED]@db/x",
            id="url-password-user-kept",
        ),
        pytest.param(
            "redis://:s3cr3tpw@cache:6379/0 refused",
            "redis://:[REDACTED]@cache:6379/0 refused",
            id="url-password-no-user",
        ),
        pytest.param(
            '{"api_key": "abcd-1234-efgh", "model": "gpt-4o"}',
            '{"api_key": "[REDACTED]", "model": "gpt-4o"}',
            id="json-api_key",
        ),
        pytest.param(
            "{'x-api-key': 'abcd-1234-efgh', 'anthropic-version': '2023-06-01'}",
            "{'x-api-key': '[REDACTED]', 'anthropic-version': '2023-06-01'}",
            id="python-repr-x-api-key",
        ),
        pytest.param("password=hunter22 next", "password=[REDACTED] next", id="password"),
        pytest.param("client_secret: abc123xyz", "client_secret: [REDACTED]", id="client_secret"),
        pytest.param("token: 1234", "token: [REDACTED]", id="token-colon"),
        pytest.param("ghp_ABCDEFGHIJKLMNOP1234 pushed", "[REDACTED] pushed", id="github-token"),
        pytest.param("AKIAABCDEFGHIJKLMNOP is the id", "[REDACTED] is the id", id="aws-access-key-id"),
        pytest.param("api_key=[REDACTED]", "api_key=[REDACTED]", id="idempotent"),
        # Ordinary text survives unchanged.
        pytest.param("the keyboard has 104 keys", "the keyboard has 104 keys", id="keyboard"),
        pytest.param("tokens used: 120", "tokens used: 120", id="tokens-used"),
        pytest.param("Rate limit reached for requests", "Rate limit reached for requests", id="rate-limit"),
        pytest.param("max_tokens: 4096", "max_tokens: 4096", id="max_tokens"),
        pytest.param("monkey=banana12", "monkey=banana12", id="monkey"),
        pytest.param("password=abc", "password=abc", id="value-shorter-than-4"),
        pytest.param(
            "Incorrect API key provided: sk-abc***xyz.",
            "Incorrect API key provided: sk-abc***xyz.",
            id="provider-masked-key",
        ),
        pytest.param(
            "connect to https://api.openai.com/v1/chat/completions failed",
            "connect to https://api.openai.com/v1/chat/completions failed",
            id="plain-url",
        ),
        pytest.param("", "", id="empty"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Authorization: Bearer abc.def", "Authorization: Bearer [REDACTED]", id="bearer-short"),
        pytest.param(
            "Authorization: Bearer abc.def-123456", "Authorization: Bearer [REDACTED]", id="bearer-dash"
        ),
        pytest.param(
            "authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
            "authorization: Bearer [REDACTED]",
            id="jwt",
        ),
        pytest.param("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]", id="basic"),
        pytest.param(
            "{'Authorization': 'Bearer abcdef123456'}",
            "{'Authorization': 'Bearer [REDACTED]'}",
            id="repr-header",
        ),
        pytest.param(
            '{"authorization": "bearer abcdef123456"}',
            '{"authorization": "bearer [REDACTED]"}',
            id="json-lower",
        ),
        # Without a scheme the whole value is the credential.
        pytest.param("Authorization: abcdef123456", "Authorization: [REDACTED]", id="no-scheme"),
    ],
)
def test_authorization_header_keeps_its_scheme_and_redacts_the_credential(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_bearer_token_outside_a_header_keeps_its_scheme() -> None:
    assert redact("sent Bearer abc.def-ghi to the proxy") == "sent Bearer [REDACTED] to the proxy"


ENV = {
    "OPENAI_API_KEY": "canary-0123456789abcdef",
    "MY_TOKEN": "tok/value=plain+text",
    "DB_PASSWORD": "correct horse battery staple",
    "WEBHOOK_SECRET": "whsec-0000aaaa",
    "HOME": "/root",
    "SHORT_KEY": "abc",
    "KEYBOARD_LAYOUT": "us-international",
}


def test_env_secret_values_are_redacted_even_when_not_key_shaped() -> None:
    set_env_secrets(ENV)
    text = (
        "key canary-0123456789abcdef; tok tok/value=plain+text; pw correct horse battery staple; "
        "hook whsec-0000aaaa; home /root; short abc; layout us-international"
    )

    assert redact(text) == (
        "key [REDACTED]; tok [REDACTED]; pw [REDACTED]; hook [REDACTED]; home /root; short abc; "
        "layout us-international"
    )


def test_set_env_secrets_remembers_only_secret_named_long_values() -> None:
    set_env_secrets(ENV)

    assert set(redaction._env_secrets) == {
        "canary-0123456789abcdef",
        "tok/value=plain+text",
        "correct horse battery staple",
        "whsec-0000aaaa",
    }


def test_set_env_secrets_replaces_what_was_remembered() -> None:
    set_env_secrets({"OPENAI_API_KEY": "canary-0123456789abcdef"})
    set_env_secrets({"OTHER_TOKEN": "other-value-123"})

    assert redact("canary-0123456789abcdef other-value-123") == f"canary-0123456789abcdef {MARK}"


def test_set_env_secrets_empty_forgets_everything() -> None:
    set_env_secrets(ENV)
    set_env_secrets({})

    assert redact("canary-0123456789abcdef") == "canary-0123456789abcdef"


def test_add_secrets_merges_and_ignores_short_and_empty_values() -> None:
    set_env_secrets({"OPENAI_API_KEY": "canary-0123456789abcdef"})
    add_secrets(["runtime-key-XYZ12345", "short", ""])

    assert redact("a canary-0123456789abcdef b runtime-key-XYZ12345 c short") == (
        f"a {MARK} b {MARK} c short"
    )


def test_longest_secret_is_replaced_first_leaving_no_partial() -> None:
    add_secrets(["abcdefgh", "abcdefgh-longer-variant"])

    assert redact("x abcdefgh-longer-variant y abcdefgh") == f"x {MARK} y {MARK}"


@pytest.mark.parametrize("remember", ["env", "added"])
def test_a_secret_inside_a_longer_one_leaves_no_part_of_the_longer(remember: str) -> None:
    # Sorted by name, "sekret-2024" would come first and cut "my-sekret-2024-full" in three.
    if remember == "env":
        set_env_secrets({"SHORT_TOKEN": "sekret-2024", "LONG_TOKEN": "my-sekret-2024-full"})
    else:
        add_secrets(["sekret-2024", "my-sekret-2024-full"])

    assert redact("a my-sekret-2024-full b sekret-2024") == f"a {MARK} b {MARK}"


def test_an_env_value_of_eight_characters_is_a_secret_and_of_seven_is_not() -> None:
    set_env_secrets({"EIGHT_TOKEN": "12345678", "SEVEN_TOKEN": "1234567"})

    assert redaction._env_secrets == ("12345678",)


def test_every_kind_of_secret_in_one_text_is_redacted() -> None:
    text = (
        "GET https://bot:hunter2hunter2@api.internal/v1?api_key=abcd1234efgh "
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9 token sk-proj-0123456789abcdef"
    )

    assert redact(text) == (
        f"GET https://bot:{MARK}@api.internal/v1?api_key={MARK} Authorization: Bearer {MARK} token {MARK}"
    )


# ---------------------------------------------------------------- bounds


def test_bound_under_and_at_the_limit_is_unchanged() -> None:
    assert bound("abc", 5) == "abc"
    assert bound("abcde", 5) == "abcde"
    assert bound("abcde", 5, keep="tail") == "abcde"


def test_bound_keeps_the_head_with_the_exact_note() -> None:
    text = "a" * 50 + "b" * 50

    out = bound(text, 40)

    # The note "... [NN chars cut] ..." takes 22 of the 40 characters: 18 kept, 82 cut.
    assert out == "a" * 18 + "... [82 chars cut] ..."
    assert len(out) == 40


def test_bound_keeps_the_tail_with_the_exact_note() -> None:
    text = "a" * 50 + "b" * 50

    out = bound(text, 40, keep="tail")

    assert out == "... [82 chars cut] ..." + "b" * 18
    assert len(out) == 40


def test_bound_note_counts_its_own_extra_digit() -> None:
    # 78 over the limit, but the 22-char note makes it 100 cut (3 digits): the note grows to 23,
    # so 99 are kept and 101 cut.
    assert bound("x" * 200, 122) == "x" * 99 + "... [101 chars cut] ..."
    assert bound("x" * 200, 122, keep="tail") == "... [101 chars cut] ..." + "x" * 99


HUNDRED = "".join(f"{i:02d}" for i in range(50))  # "000102...49": a head and a tail that differ


@pytest.mark.parametrize("keep", ["head", "tail"])
def test_bound_without_room_for_a_kept_character_cuts_plainly(keep: str) -> None:
    # 22 characters cannot hold "... [99 chars cut] ..." plus one kept character: no note.
    assert bound(HUNDRED, 22, keep=keep) == (HUNDRED[:22] if keep == "head" else HUNDRED[-22:])
    # 23 can: one character and the 22-char note.
    assert bound(HUNDRED, 23, keep=keep) == (
        "0" + "... [99 chars cut] ..." if keep == "head" else "... [99 chars cut] ..." + "9"
    )


def test_bound_keeps_the_head_by_default() -> None:
    assert bound(HUNDRED, 22) == HUNDRED[:22]  # no room for the note either
    assert bound(HUNDRED, 40) == HUNDRED[:18] + "... [82 chars cut] ..."


@pytest.mark.parametrize("keep", ["head", "tail"])
@pytest.mark.parametrize("limit", range(61))
def test_bound_never_exceeds_its_limit(limit: int, keep: str) -> None:
    out = bound(HUNDRED, limit, keep=keep)

    assert len(out) <= limit
    if limit <= 22:  # "... [NN chars cut] ..." is 22 characters: no room to keep even one
        assert out == (HUNDRED[:limit] if keep == "head" else HUNDRED[100 - limit :])
    else:
        kept = limit - 22
        note = f"... [{100 - kept} chars cut] ..."
        assert out == (HUNDRED[:kept] + note if keep == "head" else note + HUNDRED[100 - kept :])
        assert len(out) == limit


_NOTE = re.compile(r"\.\.\. \[(\d+) chars cut\] \.\.\.")


@pytest.mark.parametrize("length", [9, 10, 11, 99, 100, 101, 125, 999, 1000, 1001, 10_050])
@pytest.mark.parametrize("keep", ["head", "tail"])
def test_bound_note_reports_the_characters_actually_removed(length: int, keep: str) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(length))

    for limit in range(length + 2):
        out = bound(text, limit, keep=keep)
        assert len(out) <= limit
        if limit >= length:
            assert out == text
            continue
        found = _NOTE.search(out)
        # A note is there exactly when it fits with one kept character: 20 + digits of (length - 1) + 1.
        assert (found is None) == (limit < 21 + len(str(length - 1)))
        if found is None:
            assert out == (text[:limit] if keep == "head" else text[length - limit :])
            continue
        note = found.group(0)
        kept = len(out) - len(note)
        assert kept >= 1
        assert len(out) == limit
        assert int(found.group(1)) == length - kept
        assert out == (text[:kept] + note if keep == "head" else note + text[length - kept :])


def test_redact_message_redacts_then_bounds_head() -> None:
    text = "sk-abcdefghijklmnopqrst " + "x" * 2500

    out = redact_message(text)

    # 2511 characters once redacted; the 23-char note leaves 1977 of the 2000: 534 cut.
    assert out == "[REDACTED] " + "x" * 1966 + "... [534 chars cut] ..."
    assert len(out) == MAX_MESSAGE_CHARS


def test_redact_message_redacts_before_cutting_so_no_partial_key_survives() -> None:
    text = "x" * 1990 + " sk-ABCDEFGHIJKLMNOP " + "y" * 100

    out = redact_message(text)

    # 1990 + len(" [REDACTED] ") + 100 = 2102 characters; 1977 kept, 125 cut.
    assert out == "x" * 1977 + "... [125 chars cut] ..."
    assert "sk-" not in out


def test_redact_message_short_text_is_only_redacted() -> None:
    assert redact_message("key=abcdef123") == "key=[REDACTED]"


def test_redact_stack_keeps_the_tail_where_the_raise_is() -> None:
    head = "Traceback (most recent call last):\n" + '  File "x.py", line 1, in f\n' * 400
    last = "openai.AuthenticationError: Incorrect API key provided: sk-live0123456789abcdef\n"
    text = head + last

    out = redact_stack(text)

    redacted = head + "openai.AuthenticationError: Incorrect API key provided: [REDACTED]\n"
    assert len(redacted) == 35 + 400 * 28 + 67 == 11302
    note = "... [3326 chars cut] ..."  # 24 chars: 7976 of the 11302 kept, 3326 cut
    assert out == note + redacted[11302 - 7976 :]
    assert len(out) == MAX_STACK_CHARS
    assert out.endswith("openai.AuthenticationError: Incorrect API key provided: [REDACTED]\n")
    assert "sk-live" not in out


def test_redact_stack_short_stack_is_unchanged_but_redacted() -> None:
    assert redact_stack("ValueError: password=hunter22\n") == "ValueError: password=[REDACTED]\n"


# ---------------------------------------------------------------- structured data


def test_redact_data_nested_structures_and_dict_keys() -> None:
    add_secrets(["canary-0123456789abcdef"])
    data = {
        "sk-abcdefghijklmnop": "the key itself as a dict key",
        "headers": {"authorization": "Bearer abcdef123456", "x-request-id": "req_123"},
        "urls": ["postgresql://user:hunter2@db/x", ("token=tok_abcdef", 3, None)],
        "env": "canary-0123456789abcdef",
        7: 1.5,
        "ok": True,
    }

    assert redact_data(data) == {
        MARK: "the key itself as a dict key",
        "headers": {"authorization": f"Bearer {MARK}", "x-request-id": "req_123"},
        "urls": ["postgresql://user:[REDACTED]@db/x", [f"token={MARK}", 3, None]],
        "env": MARK,
        7: 1.5,
        "ok": True,
    }


def test_redact_data_bounds_strings_and_keys() -> None:
    long_key = "k" * 300
    out = redact_data({long_key: "v" * 50}, limit=30)

    (key, value), *_ = out.items()
    assert key == "k" * 177 + "... [123 chars cut] ..."
    assert len(key) == 200
    assert value == "v" * 8 + "... [42 chars cut] ..."
    assert len(value) == 30


def test_redact_data_leaves_scalars_alone() -> None:
    assert redact_data(None) is None
    assert redact_data(42) == 42
    assert redact_data(2.5) == 2.5
    assert redact_data(b"sk-abcdefghijklmnop") == b"sk-abcdefghijklmnop"  # bytes are not text


def test_redact_data_bounds_strings_inside_lists_by_the_same_limit() -> None:
    assert redact_data({"calls": ["w" * 50, ("t" * 50,)]}, limit=30) == {
        "calls": ["w" * 8 + "... [42 chars cut] ...", ["t" * 8 + "... [42 chars cut] ..."]]
    }


def test_redact_data_default_limit_is_the_message_limit() -> None:
    out = redact_data("z" * (MAX_MESSAGE_CHARS + 10))

    assert len(out) == MAX_MESSAGE_CHARS
    assert out == "z" * 1978 + "... [32 chars cut] ..."


# ---------------------------------------------------------------- prefixed secret names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "aws_secret_access_key=wJalrXUtnFEMIK7MDENG", "aws_secret_access_key=[REDACTED]", id="aws-secret"
        ),
        pytest.param("OPENAI_API_KEY=plainvalue0123456", "OPENAI_API_KEY=[REDACTED]", id="env-style"),
        pytest.param("private_key: abcdef0123456789", "private_key: [REDACTED]", id="private_key"),
        pytest.param("private-key: abcdef0123456789", "private-key: [REDACTED]", id="private-key-dash"),
        pytest.param(
            "export AWS_SESSION_TOKEN=FwoGZXIvYXdzEBY end",
            "export AWS_SESSION_TOKEN=[REDACTED] end",
            id="session-token",
        ),
        pytest.param('{"db_password": "hunter22"}', '{"db_password": "[REDACTED]"}', id="json-db_password"),
        pytest.param(
            "x-goog-api-key: AIzaSyD-123456 sent", "x-goog-api-key: [REDACTED] sent", id="x-goog-api-key"
        ),
        # Ordinary names around them survive.
        pytest.param("prompt_tokens=120", "prompt_tokens=120", id="prompt_tokens"),
        pytest.param("key_count=1234", "key_count=1234", id="key_count"),
    ],
)
def test_prefixed_secret_names_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Token abcdef123456", "Authorization: Token [REDACTED]"),
        ("authorization=Digest username123", "authorization=Digest [REDACTED]"),
        ("maximum token length exceeded", "maximum token length exceeded"),  # "token" alone is prose
        ("mailto:me@example.com", "mailto:me@example.com"),
    ],
)
def test_other_authorization_schemes_are_redacted_but_prose_is_not(text: str, expected: str) -> None:
    assert redact(text) == expected


# ---------------------------------------------------------------- names and URLs found since


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run --api-key=abcdef123 now", "run --api-key=[REDACTED] now"),
        ("_key=abcdefg1", "_key=[REDACTED]"),
        ("MY__KEY=abcdef123", "MY__KEY=[REDACTED]"),
        ("clé_key=abcdefgh", "clé_key=[REDACTED]"),
        ("1http://user:pw12@host", "1http://user:[REDACTED]@host"),
        ("Bearer abcdefgh and BASIC qwertyui", "Bearer [REDACTED] and BASIC [REDACTED]"),
        ("xbearer abcdefgh", "xbearer abcdefgh"),  # a longer word, not the scheme
        ("task-sk-abcdefghij", "task-[REDACTED]"),
        ("mask-abcdefghij", "mask-abcdefghij"),
        (
            "the GHP token ghp_ABCDEFGHIJKLMNOP and xoxb-123456789012",
            "the GHP token [REDACTED] and [REDACTED]",
        ),
    ],
)
def test_shapes_that_the_first_patterns_missed_or_must_keep(text: str, expected: str) -> None:
    assert redact(text) == expected


# ---------------------------------------------------------------- the fast path is exact
#
# redact() matches case-insensitive shapes case-sensitively against _fold(text) and skips a rule
# whose literals are absent. Both are optimisations: the result must equal the rules' own
# patterns run with re.IGNORECASE on the original text, with no skipping.


def test_fold_maps_exactly_the_characters_ignorecase_matches_to_ascii_letters() -> None:
    letter = re.compile("[a-z]", re.I)
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        folded = redaction._fold(ch)
        assert len(folded) == 1, f"U+{code:04X} folds to {folded!r}"
        if letter.fullmatch(ch):
            assert "a" <= folded <= "z" and re.fullmatch(folded, ch, re.I), f"U+{code:04X}"
        elif folded != ch:  # other letters may change case; nothing else may become ASCII or change kind
            assert not folded.isascii() and folded.isalpha() == ch.isalpha(), f"U+{code:04X}"


def _reference_redact(text: str) -> str:
    for rule in redaction._RULES:
        flags = re.IGNORECASE if rule.folded else 0
        text = redaction._mark(text, re.compile(rule.pattern.pattern, flags).finditer(text))
    return text


_FRAGMENTS = [
    "key",
    "KEY",
    "Key",
    "api_key",
    "API-KEY",
    "--api-key",
    "x-api-key",
    "secret_access_key",
    "ToKen",
    "passwd",
    "PASSWORD",
    "pwd",
    "Signature",
    "sig",
    "authorization",
    "AUTHORIZATION",
    "monkey",
    "bearer",
    "Basic",
    "token",
    "digest",
    "sk-",
    "SK-",
    "ghp_",
    "xoxb-",
    "AKIA",
    "https://",
    "user",
    ":",
    "=",
    ": ",
    " = ",
    "'",
    '"',
    "@",
    "/",
    "&",
    ",",
    ";",
    "}",
    "]",
    " ",
    "\n",
    "_",
    "-",
    "abcdefgh",
    "ABCDEF12",
    "1234",
    "[REDACTED]",
    "[redacted]",
    "é",
    "—",
    "\u0130",
    "\u0131",
    "\u017f",
    "\u212a",  # İ ı ſ K: the letters IGNORECASE also matches
    "k\u212aey",
    "\u017fecret",
    "passw\u0131rd",
    "AUTHOR\u0130ZAT\u0130ON",
    "bearer ",
    "ba\u017fic ",
]


@settings(max_examples=1500, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join))
def test_redact_equals_the_ignorecase_patterns_without_shortcuts(text: str) -> None:
    assert redact(text) == _reference_redact(text)
