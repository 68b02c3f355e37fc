// The error trend as a stacked bar chart (Chart.js, vendored) with the same numbers as a table for
// those who do not see the chart. Buckets the API has no errors for are drawn as zeros.

// Okabe-Ito: told apart with the common colour-vision deficiencies too.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];

/** Every bucket start (ms) from the one holding ``sinceMs`` to the one holding ``untilMs``, aligned
 * like the API's (multiples of the interval since the epoch). */
function buckets(sinceMs, untilMs, intervalMs) {
  const starts = [];
  for (let at = Math.floor(sinceMs / intervalMs) * intervalMs; at <= untilMs; at += intervalMs) starts.push(at);
  return starts;
}

function label(ms, intervalMs) {
  const options = intervalMs >= 86400000 ? { month: "short", day: "numeric" } : intervalMs >= 21600000
    ? { month: "short", day: "numeric", hour: "2-digit" }
    : { hour: "2-digit", minute: "2-digit" };
  return new Date(ms).toLocaleString(undefined, options);
}

/** Counts per category and bucket: {labels, series: [{category, counts}], total}. */
export function series(points, sinceMs, untilMs, intervalMs) {
  const starts = buckets(sinceMs, untilMs, intervalMs);
  const index = new Map(starts.map((at, i) => [at, i]));
  const byCategory = new Map();
  for (const point of points) {
    const i = index.get(Date.parse(point.bucket_start));
    if (i === undefined) continue;
    if (!byCategory.has(point.category)) byCategory.set(point.category, new Array(starts.length).fill(0));
    byCategory.get(point.category)[i] += point.count;
  }
  const list = [...byCategory.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([category, counts]) => ({ category, counts }));
  const total = list.reduce((sum, s) => sum + s.counts.reduce((a, b) => a + b, 0), 0);
  return { labels: starts.map((at) => label(at, intervalMs)), series: list, total };
}

/** Draws the chart on ``canvas`` (which must be in the document, so that it has a size). */
export function drawChart(canvas, data) {
  return new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: data.series.map((s, i) => ({ label: s.category, data: s.counts, backgroundColor: PALETTE[i % PALETTE.length] })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      color: "#1b1f24", // the page's ink: Chart.js's default grey is too faint on white
      font: { size: 13 },
      scales: {
        x: { stacked: true, ticks: { color: "#3d4651", maxRotation: 0, autoSkipPadding: 16 } },
        y: { stacked: true, beginAtZero: true, ticks: { color: "#3d4651", precision: 0 } },
      },
      plugins: { legend: { position: "bottom", labels: { color: "#1b1f24" } } },
    },
  });
}

/** What the chart shows, in words (the canvas's accessible name). */
export function summary(data, windowLabel) {
  if (!data.total) return `No errors in the last ${windowLabel}.`;
  const parts = data.series.map((s) => `${s.category} ${s.counts.reduce((a, b) => a + b, 0)}`);
  return `${data.total} errors in the last ${windowLabel}: ${parts.join(", ")}.`;
}
