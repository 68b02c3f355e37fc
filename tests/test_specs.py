"""CrewSpec validation: the shape of a crew, its cross-references and its ``{placeholders}``."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from backend.specs import CrewSpec, LLMSpec, TaskSpec, missing_inputs, template_fields

RETRY_CATEGORIES = sorted(
    [
        "network",
        "timeout",
        "rate_limit",
        "external_service",
        "resource_exhaustion",
        "database",
        "llm_output",
        "internal",
    ]
)


def crew_data(contexts: dict[str, list[str] | None] | None = None) -> dict[str, Any]:
    """A valid crew: agents x, y, z run tasks a, b, c in that order (contexts override per task)."""
    contexts = contexts or {}
    tasks: list[dict[str, Any]] = []
    for task, agent in (("a", "x"), ("b", "y"), ("c", "z")):
        body: dict[str, Any] = {
            "name": task,
            "description": f"Do {task}",
            "expected_output": f"{task} done",
            "agent": agent,
        }
        if task in contexts:
            body["context"] = contexts[task]
        tasks.append(body)
    return {
        "name": "crew",
        "agents": [
            {"name": n, "role": f"Role {n}", "goal": f"Goal {n}", "llm": {"model": "gpt-4o-mini"}}
            for n in "xyz"
        ],
        "tasks": tasks,
    }


def reference_problems_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate a crew that must fail with exactly one crew_spec_reference error; return its problems."""
    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)
    errors = caught.value.errors()
    assert len(errors) == 1
    error = errors[0]
    assert error["type"] == "crew_spec_reference"
    assert error["loc"] == ()
    problems = error["ctx"]["problems"]
    # The message is the summary of the problems, each with its dotted location.
    assert error["msg"] == "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    return problems


# --- a valid crew -------------------------------------------------------------------------------


def test_valid_three_agent_three_task_spec_validates() -> None:
    spec = CrewSpec.model_validate(crew_data())

    assert spec.name == "crew"
    assert spec.process == "sequential"
    assert [a.name for a in spec.agents] == ["x", "y", "z"]
    assert [(t.name, t.agent) for t in spec.tasks] == [("a", "x"), ("b", "y"), ("c", "z")]
    assert [t.context for t in spec.tasks] == [None, None, None]
    assert [t.critical for t in spec.tasks] == [True, True, True]
    assert spec.retry == {}
    assert spec.agent("y").role == "Role y"
    assert spec.agents[0].llm.timeout_s == 60.0
    assert spec.agents[0].backstory == ""
    assert spec.agents[0].fallback_llms == []


def test_spec_strips_surrounding_whitespace_from_strings() -> None:
    data = crew_data()
    data["agents"][0]["role"] = "  Senior Researcher \n"

    assert CrewSpec.model_validate(data).agents[0].role == "Senior Researcher"


@pytest.mark.parametrize(
    ("contexts", "task", "expected"),
    [
        ({}, "a", []),  # default: every earlier task, and the first has none
        ({}, "b", ["a"]),
        ({}, "c", ["a", "b"]),
        ({"c": ["a"]}, "c", ["a"]),  # explicit list
        ({"c": ["b", "a"]}, "c", ["b", "a"]),  # explicit order is kept
        ({"c": []}, "c", []),  # []: no context at all
        ({"b": []}, "b", []),
    ],
)
def test_context_of_defaults_to_all_earlier_tasks_unless_given(
    contexts: dict[str, list[str]], task: str, expected: list[str]
) -> None:
    spec = CrewSpec.model_validate(crew_data(contexts))

    assert spec.context_of(next(t for t in spec.tasks if t.name == task)) == expected


def test_context_of_returns_a_copy_of_the_explicit_context() -> None:
    spec = CrewSpec.model_validate(crew_data({"c": ["a"]}))
    task = spec.tasks[2]

    spec.context_of(task).append("b")

    assert task.context == ["a"]


# --- placeholders -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Research {topic}", {"topic"}),
        ("{topic} for {audience}, again {topic}", {"topic", "audience"}),
        ("{_private1}", {"_private1"}),
        ("no placeholders here", set()),
        ("", set()),
        ("{{escaped}}", set()),  # {{ escapes a brace
        ("{{escaped}} but {real}", {"real"}),
        ("{{{topic}}}", {"topic"}),  # an escaped brace on each side of a real placeholder
        ('JSON like {{"k": 1}}', set()),
        ("unbalanced {topic", set()),  # unbalanced braces: the text is left alone
        ("stray } after {topic}", {"topic"}),  # a stray brace is literal text
        ("{0}", set()),  # positional
        ("{}", set()),  # auto-numbered
        ("{a.b}", set()),  # attribute access
        ("{a[0]}", set()),  # index access
        ("{ topic }", set()),  # not an identifier
        ("{my-topic}", set()),
        ("{1abc}", set()),
    ],
)
def test_template_fields_finds_identifier_placeholders_only(text: str, expected: set[str]) -> None:
    assert template_fields(text) == expected


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("agents", "role"),
        ("agents", "goal"),
        ("agents", "backstory"),
        ("tasks", "description"),
        ("tasks", "expected_output"),
    ],
)
def test_placeholders_are_collected_from_agent_and_task_texts(where: str, field: str) -> None:
    data = crew_data()
    data[where][1][field] = "About {subject} ({{not_this}})"

    spec = CrewSpec.model_validate(data)

    assert spec.placeholders() == {"subject"}
    assert missing_inputs(spec, {}) == ["subject"]
    assert missing_inputs(spec, {"subject": "x"}) == []


def test_spec_without_placeholders_needs_no_inputs() -> None:
    spec = CrewSpec.model_validate(crew_data())

    assert spec.placeholders() == set()
    assert missing_inputs(spec, {}) == []


@pytest.mark.parametrize(
    ("inputs", "missing"),
    [
        ({}, ["audience", "tone", "topic"]),  # sorted
        ({"topic": "AI"}, ["audience", "tone"]),
        ({"topic": "AI", "tone": "dry"}, ["audience"]),
        ({"topic": "AI", "tone": "dry", "audience": "execs"}, []),
        ({"topic": "AI", "tone": "dry", "audience": "execs", "unused": 1}, []),  # extras are fine
        ({"literal": "x"}, ["audience", "tone", "topic"]),  # an escaped name is not an input
    ],
)
def test_missing_inputs_lists_unsupplied_placeholders_sorted(
    inputs: dict[str, Any], missing: list[str]
) -> None:
    data = crew_data()
    data["tasks"][0]["description"] = "Research {topic}"
    data["tasks"][2]["expected_output"] = "A {tone} report"
    data["agents"][1]["goal"] = "Explain {topic} to {audience}"
    data["agents"][2]["backstory"] = "Writes {{literal}} braces and unbalanced { ones"

    spec = CrewSpec.model_validate(data)

    assert spec.placeholders() == {"topic", "tone", "audience"}
    assert missing_inputs(spec, inputs) == missing


# --- cross-references ---------------------------------------------------------------------------


def test_duplicate_agent_and_task_names_are_reported_at_the_later_occurrence() -> None:
    data = crew_data()
    data["agents"][2]["name"] = "x"
    data["tasks"][2]["agent"] = "x"
    data["tasks"][1]["name"] = "a"

    assert reference_problems_of(data) == [
        {"loc": ["agents", 2, "name"], "msg": "duplicate name 'x'"},
        {"loc": ["tasks", 1, "name"], "msg": "duplicate name 'a'"},
    ]


def test_task_naming_an_unknown_agent_is_reported_at_its_agent_field() -> None:
    data = crew_data()
    data["tasks"][1]["agent"] = "nobody"

    assert reference_problems_of(data) == [{"loc": ["tasks", 1, "agent"], "msg": "unknown agent 'nobody'"}]


def test_unknown_context_task_is_reported_at_its_list_position() -> None:
    assert reference_problems_of(crew_data({"c": ["a", "ghost"]})) == [
        {"loc": ["tasks", 2, "context", 1], "msg": "unknown task 'ghost'"}
    ]


def test_all_reference_problems_are_reported_together() -> None:
    data = crew_data({"b": ["ghost"]})
    data["tasks"][2]["agent"] = "nobody"
    data["agents"][1]["name"] = "x"
    data["tasks"][1]["agent"] = "x"

    problems = reference_problems_of(data)

    assert problems == [
        {"loc": ["agents", 1, "name"], "msg": "duplicate name 'x'"},
        {"loc": ["tasks", 1, "context", 0], "msg": "unknown task 'ghost'"},
        {"loc": ["tasks", 2, "agent"], "msg": "unknown agent 'nobody'"},
    ]


@pytest.mark.parametrize(
    ("contexts", "problems"),
    [
        (  # 2-cycle
            {"a": ["b"], "b": ["a"]},
            [{"loc": ["tasks", 0, "context"], "msg": "context cycle: a -> b -> a"}],
        ),
        (  # 2-cycle not involving the first task
            {"b": ["c"], "c": ["b"]},
            [{"loc": ["tasks", 1, "context"], "msg": "context cycle: b -> c -> b"}],
        ),
        (  # 3-cycle
            {"a": ["c"], "b": ["a"], "c": ["b"]},
            [{"loc": ["tasks", 0, "context"], "msg": "context cycle: a -> c -> b -> a"}],
        ),
        (  # a task that lists itself
            {"b": ["b"]},
            [{"loc": ["tasks", 1, "context"], "msg": "context cycle: b -> b"}],
        ),
    ],
)
def test_context_cycles_are_reported_at_the_context_of_the_first_task_in_the_cycle(
    contexts: dict[str, list[str]], problems: list[dict[str, Any]]
) -> None:
    # With a cycle present, the "runs after" checks are not reported on top of it.
    assert reference_problems_of(crew_data(contexts)) == problems


@pytest.mark.parametrize(
    ("contexts", "problems"),
    [
        (
            {"a": ["b"]},
            [{"loc": ["tasks", 0, "context", 0], "msg": "'b' runs after 'a' in a sequential crew"}],
        ),
        (
            {"a": ["c"]},
            [{"loc": ["tasks", 0, "context", 0], "msg": "'c' runs after 'a' in a sequential crew"}],
        ),
        (
            {"b": ["a", "c"]},
            [{"loc": ["tasks", 1, "context", 1], "msg": "'c' runs after 'b' in a sequential crew"}],
        ),
        (
            {"a": ["b", "c"]},
            [
                {"loc": ["tasks", 0, "context", 0], "msg": "'b' runs after 'a' in a sequential crew"},
                {"loc": ["tasks", 0, "context", 1], "msg": "'c' runs after 'a' in a sequential crew"},
            ],
        ),
    ],
)
def test_context_naming_a_later_task_is_a_forward_reference(
    contexts: dict[str, list[str]], problems: list[dict[str, Any]]
) -> None:
    assert reference_problems_of(crew_data(contexts)) == problems


def test_context_naming_earlier_tasks_is_valid() -> None:
    spec = CrewSpec.model_validate(crew_data({"b": ["a"], "c": ["b", "a"]}))

    assert [t.context for t in spec.tasks] == [None, ["a"], ["b", "a"]]


# --- shape --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key", "loc"),
    [
        ((), "bogus", ("bogus",)),
        (("agents", 0), "memory", ("agents", 0, "memory")),
        (("agents", 0, "llm"), "api_key", ("agents", 0, "llm", "api_key")),  # secrets never travel
        (("tasks", 1), "output_pydantic", ("tasks", 1, "output_pydantic")),
    ],
)
def test_unknown_keys_are_rejected(path: tuple[str | int, ...], key: str, loc: tuple[str | int, ...]) -> None:
    data = crew_data()
    target: Any = data
    for step in path:
        target = target[step]
    target[key] = "x"

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [(e["type"], e["loc"]) for e in caught.value.errors()] == [("extra_forbidden", loc)]


def test_unknown_keys_in_a_retry_override_are_rejected() -> None:
    data = crew_data()
    data["retry"] = {"network": {"maximum_attempts": 3, "jitter": 0.1}}

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [(e["type"], e["loc"]) for e in caught.value.errors()] == [
        ("extra_forbidden", ("retry", "network", "jitter"))
    ]


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "slash/name", "x" * 101])
def test_crew_names_must_be_simple_identifiers(name: str) -> None:
    data = crew_data()
    data["name"] = name

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [(e["type"], e["loc"]) for e in caught.value.errors()] == [("string_pattern_mismatch", ("name",))]


def test_a_json_spec_runs_sequentially_hierarchical_crews_are_python_crews() -> None:
    data = crew_data()
    data["process"] = "hierarchical"

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [p["loc"] for p in caught.value.errors()[0]["ctx"]["problems"]] == [["process"]]
    data["process"] = "parallel"
    with pytest.raises(ValidationError) as unknown:
        CrewSpec.model_validate(data)
    assert [(e["type"], e["loc"]) for e in unknown.value.errors()] == [("literal_error", ("process",))]


def test_a_json_spec_cannot_ask_for_structured_outputs_or_name_code() -> None:
    data = crew_data()
    data["tasks"][0]["output_format"] = "pydantic"
    data["reference"] = "evil.module:attr"

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [p["loc"] for p in caught.value.errors()[0]["ctx"]["problems"]] == [
        ["tasks", 0, "output_format"],
        ["reference"],
    ]


def test_async_tasks_cannot_read_their_concurrent_neighbours_and_a_crew_ends_with_at_most_one() -> None:
    data = crew_data()
    for task in data["tasks"]:
        task["async_execution"] = True
    data["tasks"][1]["context"] = [data["tasks"][0]["name"]]

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    locs = [p["loc"] for p in caught.value.errors()[0]["ctx"]["problems"]]
    assert locs == [["tasks", 1, "context", 0], ["tasks", len(data["tasks"]) - 1, "async_execution"]]


@pytest.mark.parametrize("path", ["/etc/passwd", "../out.md", "a/../../b.md", "~/x.md", "$HOME/x", "a|b"])
def test_an_output_file_stays_inside_the_execution_directory(path: str) -> None:
    data = crew_data()
    data["tasks"][0]["output_file"] = path

    with pytest.raises(ValidationError):
        CrewSpec.model_validate(data)


def test_output_file_placeholders_are_inputs_the_execution_must_supply() -> None:
    data = crew_data()
    data["tasks"][0]["output_file"] = "reports/{slug}.md"

    assert "slug" in CrewSpec.model_validate(data).placeholders()


# --- LLMSpec ------------------------------------------------------------------------------------

NOT_HTTP = "Value error, base_url must be an http(s) URL with a host"
CARRIES_SECRETS = "Value error, base_url must not carry credentials or a query string"


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://files.example.com/v1", NOT_HTTP),
        ("file:///etc/passwd", NOT_HTTP),
        ("ws://llm.example.com/v1", NOT_HTTP),
        ("api.openai.com/v1", NOT_HTTP),  # no scheme
        ("http:///v1", NOT_HTTP),  # no host
        ("http://user:hunter2@llm.example.com/v1", CARRIES_SECRETS),
        ("https://:sk-secret@llm.example.com/v1", CARRIES_SECRETS),
        ("https://sk-secret@llm.example.com/v1", CARRIES_SECRETS),  # a key as the user name
        ("https://llm.example.com/v1?api-key=sk-secret", CARRIES_SECRETS),
        ("https://llm.example.com/v1?x=1", CARRIES_SECRETS),
    ],
)
def test_base_url_must_be_plain_http_or_https(base_url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LLMSpec(model="gpt-4o-mini", base_url=base_url)

    errors = caught.value.errors()
    assert [(e["type"], e["loc"], e["msg"]) for e in errors] == [("value_error", ("base_url",), message)]


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8000/v1",
        "https://api.openai.com/v1",
        "http://localhost:11434",
        "https://h.example/a/b/",
    ],
)
def test_base_url_accepts_http_and_https_endpoints(base_url: str) -> None:
    assert LLMSpec(model="m", base_url=base_url).base_url == base_url


@pytest.mark.parametrize(
    ("llm", "service_name"),
    [
        ({"base_url": "http://127.0.0.1:8000/v1"}, "127.0.0.1"),
        ({"base_url": "https://api.groq.com/openai/v1"}, "api.groq.com"),
        ({"base_url": "https://API.Example.COM/v1"}, "api.example.com"),  # hostnames are case-insensitive
        ({"base_url": "https://api.groq.com/openai/v1", "service": "groq"}, "groq"),  # explicit wins
        ({"service": "azure-east"}, "azure-east"),
        ({}, "openai"),  # no base_url: OpenAI itself
    ],
)
def test_service_name_is_explicit_service_else_base_url_host_else_openai(
    llm: dict[str, str], service_name: str
) -> None:
    assert LLMSpec(model="gpt-4o-mini", **llm).service_name == service_name


def test_llm_defaults() -> None:
    llm = LLMSpec(model="gpt-4o-mini")

    assert (llm.base_url, llm.api_key_env, llm.timeout_s, llm.service, llm.temperature) == (
        None,
        None,
        60.0,
        None,
        None,
    )


@pytest.mark.parametrize("api_key_env", ["1STARTS_WITH_DIGIT", "HAS-DASH", "sk-abc123", ""])
def test_api_key_env_must_be_an_environment_variable_name(api_key_env: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LLMSpec(model="m", api_key_env=api_key_env)

    assert [(e["type"], e["loc"]) for e in caught.value.errors()] == [
        ("string_pattern_mismatch", ("api_key_env",))
    ]


# --- retry overrides ----------------------------------------------------------------------------

UNKNOWN_RETRY = f"Value error, unknown retry categories ['bogus', 'dns']; known: {RETRY_CATEGORIES}"


def test_task_retry_overrides_reject_unknown_categories() -> None:
    with pytest.raises(ValidationError) as caught:
        TaskSpec(
            name="t",
            description="d",
            expected_output="e",
            agent="x",
            retry={"network": {}, "dns": {}, "bogus": {"maximum_attempts": 2}},
        )

    assert [(e["type"], e["loc"], e["msg"]) for e in caught.value.errors()] == [
        ("value_error", ("retry",), UNKNOWN_RETRY)
    ]


def test_crew_retry_overrides_reject_unknown_categories() -> None:
    data = crew_data()
    data["retry"] = {"bogus": {}, "dns": {}}

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [(e["type"], e["loc"], e["msg"]) for e in caught.value.errors()] == [
        ("value_error", ("retry",), UNKNOWN_RETRY)
    ]


@pytest.mark.parametrize("category", RETRY_CATEGORIES)
def test_retry_overrides_accept_every_known_category(category: str) -> None:
    data = crew_data()
    data["retry"] = {category: {"maximum_attempts": 2, "backoff": 1.5}}
    data["tasks"][0]["retry"] = {category: {"initial_interval_s": 0.5}}

    spec = CrewSpec.model_validate(data)

    assert spec.retry[category].maximum_attempts == 2
    assert spec.retry[category].backoff == 1.5
    assert spec.tasks[0].retry[category].initial_interval_s == 0.5


@pytest.mark.parametrize(
    ("override", "loc"),
    [
        ({"maximum_attempts": 0}, ("retry", "network", "maximum_attempts")),
        ({"backoff": 0.5}, ("retry", "network", "backoff")),
        ({"initial_interval_s": 0}, ("retry", "network", "initial_interval_s")),
    ],
)
def test_retry_override_values_are_bounded(override: dict[str, float], loc: tuple[str, ...]) -> None:
    data = crew_data()
    data["retry"] = {"network": override}

    with pytest.raises(ValidationError) as caught:
        CrewSpec.model_validate(data)

    assert [e["loc"] for e in caught.value.errors()] == [loc]


@pytest.mark.parametrize(
    ("text", "inputs", "expected"),
    [
        ("Research {topic}", {"topic": "otters"}, "Research otters"),
        ("{{escaped}} {topic}", {"topic": "x", "escaped": "E"}, "{escaped} x"),
        ("{{{topic}}}", {"topic": "x"}, "{x}"),
        ("stray } and {topic}", {"topic": "x"}, "stray } and x"),
        ("{unknown} stays", {}, "{unknown} stays"),
        ("{a!r} {b:>3} {c.d} {e[0]}", {"a": 1, "b": 2, "c": 3, "e": 4}, "{a!r} {b:>3} {c.d} {e[0]}"),
        ("{topic}", {"topic": "{0.__class__} {other}"}, "{0.__class__} {other}"),  # no re-expansion
    ],
)
def test_interpolation_fills_exactly_the_placeholders_validation_requires(
    text: str, inputs: dict[str, Any], expected: str
) -> None:
    from backend.specs import interpolate

    assert interpolate(text, inputs) == expected
    # Whatever validation asks for is what interpolation fills in, and nothing else.
    filled = {name for name in template_fields(text) if name in inputs}
    assert filled == template_fields(text) & set(inputs)
