// Lists of the API come in pages ({items, next_cursor}); "Load more" asks for the next one.
import { h } from "./dom.js";
import { fail } from "./notify.js";

/** The first page drawn by ``draw(items)``, with a "Load more" button while there is a next page
 * (``next(cursor)`` fetches it). After loading, focus stays on the button, or moves to the list. */
export function pagedList(first, next, draw, label) {
  const items = [...first.items];
  let cursor = first.next_cursor;
  const container = h("div", { class: "paged" });
  const more = h("button", { type: "button", class: "more", "data-key": `more-${label}` }, `Load more ${label}`);

  function redraw() {
    container.replaceChildren(...[draw(items), cursor ? more : null].filter(Boolean));
  }
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const page = await next(cursor);
      items.push(...page.items);
      cursor = page.next_cursor;
    } catch (error) {
      fail(error);
    }
    more.disabled = false;
    redraw();
    (cursor ? more : container.firstElementChild).focus();
  });
  redraw();
  return container;
}
