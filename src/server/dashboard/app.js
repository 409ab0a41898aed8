// paystream dashboard: plain browser JS, no dependencies, no build step.
// Talks to GET/POST /api/queries, DELETE /api/queries/{name}, POST .../savepoint and the
// SSE stream GET /api/queries/{name}/results. Auth rides on the cookie the server sets.
'use strict';

// ---- Constants -------------------------------------------------------------------------------
const POLL_MS = 2000;
const MAX_ROWS = 200;            // rows kept per sink in the live table
const MAX_ALERTS = 50;           // lines kept in the alert feed
const TOP_SERIES = 8;            // series drawn in the chart
const MAX_POINTS = 240;          // windows kept per chart series
const MAX_SERIES = 2000;         // series kept per sink (card ids can be many)
const ALERT_WORDS = /alert|risk|velocity|fraud/i;
const EXP0 = new Set('JPY KRW VND CLP ISK UGX XAF XOF XPF PYG RWF KMF GNF DJF BIF VUV'.split(' '));
const EXP3 = new Set('BHD IQD JOD KWD LYD OMR TND'.split(' '));
const PALETTE = ['#2563eb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d'];
const EXAMPLE_SQL = `SELECT merchant_id, currency,
       window_start, window_end,
       count(*) AS captures,
       sum(amount_minor) AS captured_minor
FROM TUMBLE(payments, event_time,
            INTERVAL '1' MINUTE)
WHERE event_type = 'capture'
GROUP BY merchant_id, currency,
         window_start, window_end`;

const $ = (sel) => document.querySelector(sel);
const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
const enc = encodeURIComponent;

// Amounts may reach past 2^53 once summed; where the browser exposes the JSON source text,
// keep such integers as digit strings so money is never rounded.
function parseJSON(text) {
  return JSON.parse(text, (k, v, ctx) =>
    (typeof v === 'number' && !Number.isSafeInteger(v) && ctx && /^-?\d+$/.test(ctx.source)) ? ctx.source : v);
}

// ---- Formatting (no locale: fixed separators, UTC) ---------------------------------------------
const group = (digits) => digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');

function fmtFixed(n, frac) {
  const [i, f] = Math.abs(n).toFixed(frac).split('.');
  return (n < 0 && /[1-9]/.test(i + (f || '')) ? '-' : '') + group(i) + (f ? '.' + f : '');
}
function fmtNum(v, frac = 2) {
  if (v === null || v === undefined || v === '') return '–';
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return (v[0] === '-' ? '-' : '') + group(v.replace('-', ''));
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return Number.isInteger(n) ? fmtFixed(n, 0) : fmtFixed(n, frac);
}
const currencyExp = (code) => (EXP0.has(code) ? 0 : EXP3.has(code) ? 3 : 2);

// Integer minor units → "1,234.56 EUR", by string arithmetic so nothing is rounded.
function fmtMoney(v, currency) {
  if (v === null || v === undefined) return '–';
  const code = String(currency).toUpperCase();
  const exp = currencyExp(code);
  const s = String(v).trim();
  if (!/^-?\d+$/.test(s)) return Number.isFinite(Number(s)) ? fmtFixed(Number(s) / 10 ** exp, exp) + ' ' + code : s;
  const neg = s[0] === '-';
  const digits = s.replace('-', '').replace(/^0+(?=\d)/, '').padStart(exp + 1, '0');
  const cut = digits.length - exp;
  return (neg ? '-' : '') + group(digits.slice(0, cut)) + (exp ? '.' + digits.slice(cut) : '') + ' ' + code;
}
const minorToMajor = (v, currency) => Number(v) / 10 ** currencyExp(String(currency).toUpperCase());

function toMs(v) {   // RFC 3339 text (sub-millisecond digits trimmed) or epoch ms → epoch ms
  const t = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v.replace(/(\.\d{3})\d+/, '$1')) : NaN;
  return Number.isNaN(t) ? null : t;
}
function fmtTime(v) {
  if (v === null || v === undefined) return '–';
  const t = toMs(v);
  return t === null ? String(v) : new Date(t).toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
}
function fmtDur(ms) {   // 850 ms, 4.2 s, 3.5 min, 2.1 h, 3.0 d
  if (ms === null || ms === undefined) return '–';
  const s = ms / 1000;
  if (ms < 1000) return Math.round(ms) + ' ms';
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  return s < 172800 ? (s / 3600).toFixed(1) + ' h' : fmtNum(+(s / 86400).toFixed(1), 1) + ' d';
}
function fmtCompact(v) {   // axis labels: 950, 12.5k, 3.2M, 1.1B
  const a = Math.abs(v);
  const [d, suffix] = a >= 1e9 ? [1e9, 'B'] : a >= 1e6 ? [1e6, 'M'] : a >= 1e4 ? [1e3, 'k'] : [1, ''];
  const n = +(v / d).toFixed(2);
  return fmtNum(n, (String(n).split('.')[1] || '').length) + suffix;
}

// ---- Columns: types from the sink's schema, or inferred from a row -----------------------------
const isNumeric = (c) => /int|num|float|double|decimal/i.test(c.type);
const isTime = (c) => /time|date/i.test(c.type) || c.name === 'window_start' || c.name === 'window_end';
const isKey = (c) => !isNumeric(c) && !isTime(c) && /string|bool|text|char/i.test(c.type);

function inferType(v) {
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  if (typeof v === 'boolean') return 'boolean';
  if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v)) return 'timestamp';
  if (typeof v === 'string') return /^-?\d{16,}$/.test(v) ? 'integer' : 'string';  // big ints kept as text
  return 'unknown';
}
// Money columns end in _minor and are shown in major units when the row carries a currency.
function makeColumns(defs) {
  const hasCur = defs.some((c) => c.name === 'currency');
  return defs.filter((c) => c.name !== '_sink').map((c) => {
    const money = hasCur && c.name.endsWith('_minor');
    return { name: c.name, type: String(c.type || 'unknown'), money, label: money ? c.name.slice(0, -6) : c.name };
  });
}
function fmtCell(c, row) {
  const v = row[c.name];
  if (v === null || v === undefined) return '–';
  if (c.name.endsWith('_minor')) return c.money && row.currency ? fmtMoney(v, row.currency) : String(v);
  if (isTime(c)) return fmtTime(v);
  if (isNumeric(c)) return fmtNum(v);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

// ---- API, connection status, auth --------------------------------------------------------------
async function api(method, path, body) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) Object.assign(opts, { body: JSON.stringify(body), headers: { ...opts.headers, 'Content-Type': 'application/json' } });
  const res = await fetch(path, opts);
  let data = null;
  try { data = parseJSON(await res.text()); } catch (_) { /* empty or non-JSON body */ }
  if (res.status === 401) setConn('token');
  return { ok: res.ok, status: res.status, data: data || {} };
}
const errText = (r) => (r.data && r.data.error) || `HTTP ${r.status}`;

function setConn(state) {
  const labels = { live: 'live', reconnecting: 'reconnecting…', token: 'token needed' };
  $('#conn').dataset.state = state;
  $('#conn-label').textContent = labels[state];
  $('#token-form').hidden = state !== 'token';
}
function toast(msg, kind = 'ok') {   // fixed-position, so it never pushes the layout
  const t = Object.assign(document.createElement('div'), { className: 'toast ' + kind, textContent: msg });
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 5000);
}
// Refill a <select> only when its options change, so an open dropdown is not reset.
function fillSelect(sel, options, value) {
  const want = options.map((o) => o[0]).join('\n');
  if (sel.dataset.names !== want) {
    sel.dataset.names = want;
    sel.innerHTML = options.map(([v, label]) => `<option value="${esc(v)}">${esc(label)}</option>`).join('');
  }
  if (value !== null && value !== undefined) sel.value = value;
}
// The text of an SSE `dropped` event, whose data is {"error": "..."}.
function droppedText(e) {
  try { return parseJSON(e.data).error || 'dropped by the server'; } catch (_) { return 'dropped by the server'; }
}

// ---- Polling and the engine overview -----------------------------------------------------------
let queries = [];
let pollTimer = null;

async function poll() {
  try {
    const r = await api('GET', '/api/queries');
    if (r.ok && Array.isArray(r.data)) {
      queries = r.data;
      setConn('live');
      $('#updated').textContent = 'updated ' + fmtTime(Date.now()).slice(11);
      renderOverview(); renderQueries(); syncAlertStreams(); ensureSelection();
    } else if (r.status !== 401) setConn('reconnecting');
  } catch (_) { setConn('reconnecting'); }
  clearTimeout(pollTimer);   // an extra poll (after submit/stop) restarts the 2 s cycle
  pollTimer = setTimeout(poll, POLL_MS);
}
function renderOverview() {
  const m = (q) => q.metrics || {};
  const running = queries.filter((q) => q.state === 'running');
  const sum = (list, f) => list.reduce((a, q) => a + (Number(f(m(q))) || 0), 0);
  const max = (list, f) => list.map((q) => f(m(q))).filter((v) => v !== null && v !== undefined)
    .reduce((a, v) => (a === null ? Number(v) : Math.max(a, Number(v))), null);
  const stat = (id, text) => { const el = $(id); el.textContent = text; el.title = text; };
  // Rates, lag and delays describe live work, so only running queries count; counters are totals.
  stat('#st-eps', fmtNum(sum(running, (x) => x.events_per_second), 1));
  stat('#st-lag', fmtNum(sum(running, (x) => x.lag_total)));
  stat('#st-wm', fmtDur(max(running, (x) => x.watermark_delay_ms)));
  stat('#st-late', fmtNum(sum(queries, (x) => x.late)));
  stat('#st-dlq', fmtNum(sum(queries, (x) => x.dead_lettered)));
  stat('#st-ckpt', fmtDur(max(running, (x) => x.last_checkpoint && x.last_checkpoint.age_ms)));
  stat('#st-queries', `${running.length} / ${queries.length}`);
  $('#queries-count').textContent = queries.length ? `${queries.length} ${queries.length === 1 ? 'query' : 'queries'}` : '';
}

// ---- Queries table (rows keyed by name and updated in place, so buttons never jump) ------------
const qRows = new Map();

function makeQueryRow(name) {
  const tr = document.createElement('tr');
  tr.dataset.name = name;
  tr.innerHTML = '<td class="name"></td><td><span class="badge"></span></td><td class="num"></td><td class="num"></td>' +
    '<td class="num"></td><td class="time"></td><td class="num"></td><td></td><td class="actions">' +
    '<button data-act="results">results</button><button data-act="savepoint">savepoint</button>' +
    '<button data-act="stop" class="danger">stop</button></td>';
  const errTr = Object.assign(document.createElement('tr'), { className: 'err-row', innerHTML: '<td colspan="9"></td>' });
  return { tr, errTr, cells: tr.children };
}
function updateQueryRow(r, q) {
  const m = q.metrics || {};
  const ck = m.last_checkpoint;
  const cells = [   // [text, tooltip] per column; the badge and the buttons are handled below
    [q.name, q.name + (q.sql ? '\n\n' + q.sql : '')], null, [fmtNum(m.events_in)], [fmtNum(m.events_out)], [fmtNum(m.events_per_second, 1)],
    [fmtTime(m.watermark), m.watermark_delay_ms == null ? '' : 'delay ' + fmtDur(m.watermark_delay_ms)],
    [fmtNum(m.lag_total), Object.entries(m.lag || {}).map(([p, n]) => `${p}: ${n}`).join('\n')],
    [ck ? `#${ck.id} · ${fmtDur(ck.age_ms)} ago` : '–', ck ? `duration ${fmtDur(ck.duration_ms)}, ${fmtNum(ck.bytes)} bytes` : ''],
  ];
  cells.forEach((v, i) => { if (v) Object.assign(r.cells[i], { textContent: v[0], title: v[1] || '' }); });
  Object.assign(r.cells[1].firstChild, { textContent: q.state, className: 'badge st-' + q.state });
  const [, savepoint, stop] = r.cells[8].children;
  savepoint.disabled = q.state !== 'running';
  // DELETE stops a running query and forgets a stopped or failed one, hence the two labels.
  const ended = q.state === 'stopped' || q.state === 'failed';
  Object.assign(stop, { textContent: ended ? 'remove' : 'stop', disabled: q.state === 'stopping' });
  r.tr.classList.toggle('selected', q.name === res.name);
  r.errTr.hidden = !q.error;
  r.errTr.firstChild.textContent = q.error ? 'error: ' + q.error : '';
}
function renderQueries() {
  const tbody = $('#queries tbody');
  const seen = new Set();
  let cursor = tbody.firstChild;
  for (const q of queries) {
    seen.add(q.name);
    if (!qRows.has(q.name)) qRows.set(q.name, makeQueryRow(q.name));
    const r = qRows.get(q.name);
    for (const node of [r.tr, r.errTr]) {   // keep server order, moving only rows that are misplaced
      if (node === cursor) cursor = cursor.nextSibling;
      else tbody.insertBefore(node, cursor);
    }
    updateQueryRow(r, q);
  }
  for (const [name, r] of qRows) if (!seen.has(name)) { r.tr.remove(); r.errTr.remove(); qRows.delete(name); }
  $('#queries-empty').hidden = queries.length > 0;
}
async function onQueryAction(ev) {
  const btn = ev.target.closest('button[data-act]');
  if (!btn) return;
  const { name } = btn.closest('tr').dataset, act = btn.dataset.act, path = '/api/queries/' + enc(name);
  if (act === 'results') { select(name); return; }
  const question = btn.textContent === 'remove' ? `Remove the ended query "${name}" from the list?`
    : `Stop query "${name}"?\n\nIt takes a final checkpoint, stops reading events, and its results stop updating.`;
  if (act === 'stop' && !confirm(question)) return;
  btn.disabled = true;
  try {
    const r = act === 'stop' ? await api('DELETE', path) : await api('POST', path + '/savepoint');
    if (!r.ok) toast(`${act} ${name} failed: ${errText(r)}`, 'error');
    else if (act === 'stop') toast(`${name}: ${r.data.state || 'stopping'}`);
    else toast(`Savepoint of ${name} written: ${r.data.savepoint}`);
  } catch (e) { toast(`${act} ${name} failed: ${e.message}`, 'error'); }
  poll();
}

// ---- Submit form: line-number gutter and error marking -----------------------------------------
const LH = 20;    // textarea line height in px; must match --code-lh in style.css
const PAD = 8;    // textarea top padding in px
const ed = { errLine: null, lines: 0 };

function renderGutter() {
  const ta = $('#q-sql');
  const n = Math.max(ta.value.split('\n').length, 12);
  $('#gutter').innerHTML = Array.from({ length: n }, (_, i) => `<div${i + 1 === ed.errLine ? ' class="err"' : ''}>${i + 1}</div>`).join('');
  ed.lines = n;
  syncEditorScroll();
}
function syncEditorScroll() {
  const ta = $('#q-sql');
  $('#gutter').scrollTop = ta.scrollTop;
  const mark = $('#line-mark');
  mark.hidden = !ed.errLine;
  if (ed.errLine) mark.style.top = (PAD + (ed.errLine - 1) * LH - ta.scrollTop) + 'px';
}
function showFormMsg(html, kind) { Object.assign($('#submit-msg'), { className: 'form-msg ' + kind, innerHTML: html }); }

// Highlight line L, and put the caret at column C (selecting the token that starts there).
function markError(line, column) {
  const ta = $('#q-sql');
  const lines = ta.value.split('\n');
  ed.errLine = line ? Math.min(line, lines.length) : null;
  renderGutter();
  if (!ed.errLine) return;
  const offset = lines.slice(0, ed.errLine - 1).reduce((a, l) => a + l.length + 1, 0);
  const text = lines[ed.errLine - 1];
  const col = Math.max(1, Math.min(column || 1, text.length + 1));
  const word = column ? /^\w+/.exec(text.slice(col - 1)) : null;
  const start = offset + col - 1;
  ta.focus();
  ta.setSelectionRange(start, start + (word ? word[0].length : 0));
  ta.scrollTop = Math.max(0, (ed.errLine - 1) * LH - ta.clientHeight / 2);
  syncEditorScroll();
}
async function onSubmit(ev) {
  ev.preventDefault();
  const name = $('#q-name').value.trim(), sql = $('#q-sql').value;
  if (!sql.trim()) { showFormMsg('Write a query first, or insert the example.', 'error'); return; }
  ed.errLine = null; renderGutter();
  showFormMsg('Submitting…', 'muted');
  $('#submit-btn').disabled = true;
  try {
    const r = await api('POST', '/api/queries', { name, sql });
    if (r.status === 201) {
      showFormMsg(`Query <b>${esc(r.data.name || name)}</b> started (${esc(r.data.state || 'running')}).`, 'ok');
      $('#q-name').value = '';
      await poll();
      select(r.data.name || name);
    } else if (r.status === 400) {
      const { line, column } = r.data;
      const where = line ? `<b>line ${esc(line)}${column ? ', column ' + esc(column) : ''}</b>: ` : '';
      // the server may already start the text with the position; show it once
      showFormMsg(where + esc(line ? errText(r).replace(/^line \d+(, column \d+)?: /, '') : errText(r)), 'error');
      markError(line, column);
    } else showFormMsg(esc(errText(r)), 'error');
  } catch (e) {
    showFormMsg('Could not reach the server: ' + esc(e.message), 'error');
  } finally { $('#submit-btn').disabled = false; }
}

// ---- Live results of the selected query --------------------------------------------------------
// Rows are kept per sink (the `_sink` field); a reconnect replays from the earliest result,
// so the old rows are dropped when the first replayed row arrives (no duplicates, no blank flash).
// An updating query's rows are changes to the row of their key: `keyed` holds, per such sink,
// the current row of each key (a delete removes it), most recently changed last.
const res = { name: null, es: null, retry: null, backoff: 1000, sink: null, bySink: new Map(),
  keyed: new Map(), totals: new Map(), inferred: new Map(), chart: new Map(), pendingReset: false, colKey: '', dirty: false };

const currentQuery = () => queries.find((q) => q.name === res.name);

// Rows without `_sink` (single-sink queries) are kept under the key ''.
function sinkNames() {
  const q = currentQuery();
  // Only result tables stream rows (tagged with _sink when there are several).
  const tables = q && q.sinks ? q.sinks.filter((s) => s.table) : [];
  const names = tables.length > 1 ? tables.map((s) => s.name) : [];
  for (const s of res.bySink.keys()) if (!names.includes(s)) names.push(s);
  return names;
}
// The key columns of an updating query's sink (null: its rows are appended).
function keyOf(sink) {
  const sinks = (currentQuery() || {}).sinks || [];
  const def = sinks.find((s) => s.name === sink) || (sink === '' ? sinks.find((s) => s.table) : null);
  return def && Array.isArray(def.key) && def.key.length ? def.key : null;
}
function columnsFor(sink) {
  const sinks = (currentQuery() || {}).sinks || [];
  const def = sinks.find((s) => s.name === sink) || (sink === '' && sinks.length === 1 ? sinks[0] : null);
  if (def && def.columns && def.columns.length) return makeColumns(def.columns);
  return makeColumns(res.inferred.get(sink) || []);
}
function ensureSelection() {
  if (res.name || !queries.length) return;
  const fromHash = decodeURIComponent(location.hash.slice(1));
  const q = queries.find((x) => x.name === fromHash) || queries.find((x) => x.state === 'running') || queries[0];
  select(q.name);
}
function select(name) {
  if (res.name === name && res.es) return;
  res.name = name;
  history.replaceState(null, '', '#' + enc(name));
  res.bySink.clear(); res.keyed.clear(); res.totals.clear(); res.inferred.clear(); res.chart.clear();
  res.sink = null; res.colKey = ''; res.backoff = 1000;
  $('#res-name').textContent = name;
  renderQueries();
  openResults();
  renderResults(); drawChart();
}
function closeResults() { clearTimeout(res.retry); if (res.es) res.es.close(); res.es = null; }
function setStream(text, kind) { Object.assign($('#stream-status'), { textContent: text, className: 'small stream-status ' + kind }); }

function openResults() {
  closeResults();
  const es = new EventSource(`/api/queries/${enc(res.name)}/results?from=earliest`);
  res.es = es;
  res.pendingReset = res.bySink.size > 0;
  setStream('connecting…', 'muted');
  es.onopen = () => { res.backoff = 1000; setStream('● streaming', 'ok'); };
  es.onmessage = (e) => { try { addResultRow(parseJSON(e.data)); } catch (_) { /* skip a malformed row */ } };
  // The server sends `event: dropped` with {"error"} when this subscriber fell too far behind;
  // a server-sent `event: error` (it has data, unlike a network error) is treated the same way.
  const dropped = (e) => {
    toast(`${res.name}: ${droppedText(e)}; reconnecting`, 'error');   // the status line alone flips back too fast
    setStream(droppedText(e) + ' · reconnecting', 'error');
    closeResults();
    res.retry = setTimeout(openResults, 1000);
  };
  es.addEventListener('dropped', dropped);
  es.onerror = (e) => {
    if (res.es !== es) return;
    if (typeof e.data === 'string') { dropped(e); return; }
    const q = currentQuery();
    closeResults();   // own retry instead of the browser's, which would replay into kept rows
    if (q && q.state !== 'running' && res.bySink.size) { setStream(`stream ended · query ${q.state}`, 'muted'); return; }
    setStream('stream interrupted · retrying', 'warn');
    res.retry = setTimeout(openResults, res.backoff);
    res.backoff = Math.min(res.backoff * 2, 15000);
  };
}
function addResultRow(row) {
  if (!row || typeof row !== 'object') return;
  if (res.pendingReset) { res.pendingReset = false; res.bySink.clear(); res.keyed.clear(); res.totals.clear(); res.chart.clear(); }
  const sink = row._sink || '';
  if (!res.bySink.has(sink)) {
    res.bySink.set(sink, []);
    if (!res.inferred.has(sink)) res.inferred.set(sink, Object.keys(row).map((k) => ({ name: k, type: inferType(row[k]) })));
    if (res.sink === null) res.sink = sink;
  }
  const key = keyOf(sink);
  if (key) {
    if (!res.keyed.has(sink)) res.keyed.set(sink, new Map());
    const current = res.keyed.get(sink);
    const k = JSON.stringify(key.map((c) => row[c]));
    current.delete(k);   // re-inserted last: most recently changed
    if (row.op !== 'delete') current.set(k, row);
    // Only the most recently changed are shown: the page keeps a bounded number of keys.
    if (current.size > MAX_ROWS * 10) for (const old of current.keys()) { current.delete(old); if (current.size <= MAX_ROWS * 5) break; }
  } else {
    const rows = res.bySink.get(sink);   // oldest first; trimmed in batches to keep push cheap
    rows.push(row);
    if (rows.length > MAX_ROWS * 2) rows.splice(0, rows.length - MAX_ROWS);
  }
  res.totals.set(sink, (res.totals.get(sink) || 0) + 1);
  chartAdd(sink, row);
  res.dirty = true;
}
function renderSinkSelect() {
  const names = sinkNames();
  if (res.sink === null && names.length) res.sink = names[0];
  $('#sink-wrap').hidden = names.length < 2;
  fillSelect($('#sink-select'), names.map((n) => [n, n || res.name]), res.sink);
}
function renderResults() {
  res.dirty = false;
  renderSinkSelect();
  const table = $('#results');
  const keyed = res.keyed.get(res.sink);
  const all = keyed ? Array.from(keyed.values()) : (res.bySink.get(res.sink) || []);
  const rows = res.name ? all.slice(-MAX_ROWS).reverse() : [];
  const cols = res.name ? columnsFor(res.sink) : [];
  const key = cols.map((c) => c.name + ':' + c.type + ':' + c.money).join('|');
  if (key !== res.colKey) {   // rebuild the header only when the columns change
    res.colKey = key;
    const widths = cols.map((c) => (isTime(c) ? 196 : c.money ? 150 : isNumeric(c) ? 96 : 120));  // px; spare width is shared
    table.querySelector('colgroup').innerHTML = widths.map((w) => `<col style="width:${w}px">`).join('');
    table.querySelector('thead').innerHTML = '<tr>' + cols.map((c) => `<th class="${isNumeric(c) ? 'num' : ''}" ` +
      `title="${esc(c.money ? c.name + ' in major units of currency' : c.name)}">${esc(c.label)}</th>`).join('') + '</tr>';
    table.style.minWidth = widths.reduce((a, b) => a + b, 0) + 'px';
  }
  table.querySelector('tbody').innerHTML = rows.map((r) => '<tr>' + cols.map((c) => {
    const t = esc(fmtCell(c, r));
    return `<td class="${isNumeric(c) ? 'num' : isTime(c) ? 'time' : ''}" title="${t}">${t}</td>`;
  }).join('') + '</tr>').join('');
  const received = fmtNum(res.totals.get(res.sink) || 0);
  $('#res-count').textContent = !res.name ? ''
    : keyed ? `${fmtNum(keyed.size)} keys, latest row of each · ${fmtNum(rows.length)} shown · ${received} changes received`
    : `${fmtNum(rows.length)} shown of ${received} received`;
  Object.assign($('#results-empty'), { hidden: rows.length > 0,
    innerHTML: res.name ? 'Waiting for result rows…' : 'Select a query with its <b>results</b> button.' });
}

// ---- Chart: hand-drawn SVG, one line per series, x = window_end --------------------------------
let yCol = null;          // chosen y column name
let chartDrawn = 0;       // time of the last draw (throttled to once per second while streaming)
let chartDirty = false;

function chartAdd(sink, row) {
  if (!res.chart.has(sink)) res.chart.set(sink, { series: new Map(), windowed: null, keyCols: columnsFor(sink).filter(isKey) });
  const d = res.chart.get(sink);
  chartDirty = true;
  if (row.window_end === undefined || row.window_end === null) { if (d.windowed === null) d.windowed = false; return; }
  const x = toMs(row.window_end);
  if (x === null) return;
  d.windowed = true;
  const key = d.keyCols.map((c) => row[c.name] ?? '∅').join(' ') || 'all rows';
  let s = d.series.get(key);
  if (!s) {
    if (d.series.size >= MAX_SERIES) {   // evict the series that has been quiet the longest
      let oldest = null;
      for (const t of d.series.values()) if (!oldest || t.lastX < oldest.lastX) oldest = t;
      d.series.delete(oldest.key);
    }
    s = { key, points: new Map(), lastX: -Infinity };
    d.series.set(key, s);
  }
  s.points.set(x, row);   // a re-emitted window replaces the earlier value
  if (x > s.lastX) s.lastX = x;
  if (s.points.size > MAX_POINTS) s.points.delete(Math.min(...s.points.keys()));
}
function renderYSelect(cols) {
  const nums = cols.filter((c) => isNumeric(c) && !isTime(c));
  if (!nums.some((c) => c.name === yCol)) yCol = (nums.find((c) => c.name.endsWith('_minor')) || nums[0] || {}).name || null;
  fillSelect($('#y-select'), nums.map((c) => [c.name, c.label + (c.money ? ' (major units)' : '')]), yCol);
  $('#y-select').disabled = !nums.length;
  return nums.find((c) => c.name === yCol) || null;
}
function niceTicks(lo, hi, count) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const raw = (hi - lo) / count, p = 10 ** Math.floor(Math.log10(raw)), f = raw / p;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  const a = Math.floor(lo / step) * step, b = Math.ceil(hi / step) * step;
  const ticks = Array.from({ length: Math.round((b - a) / step) + 1 }, (_, i) => +(a + i * step).toPrecision(12));
  return { lo: a, hi: b, ticks };
}
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
function timeTicks(x0, x1, count) {
  const step = TIME_STEPS.find((s) => (x1 - x0) / s <= count) || 86400000 * Math.ceil((x1 - x0) / count / 86400000);
  const [from, to] = step >= 86400000 ? [0, 10] : step >= 60000 ? [11, 16] : [11, 19];   // date, HH:MM or HH:MM:SS
  const ticks = [];
  for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) ticks.push([t, new Date(t).toISOString().slice(from, to)]);
  return ticks;
}
function chartMessage(text) { $('#chart').innerHTML = `<div class="chart-msg">${esc(text)}</div>`; $('#legend').innerHTML = ''; }

function drawChart() {
  chartDirty = false; chartDrawn = Date.now();
  const cols = res.name ? columnsFor(res.sink) : [];
  const col = renderYSelect(cols);
  const d = res.chart.get(res.sink);
  if (!res.name) return chartMessage('Select a query to chart its results.');
  if (!d || d.windowed === null) return chartMessage('Waiting for results…');
  if (!d.windowed) return chartMessage('not a windowed result');
  if (!col) return chartMessage('No numeric column to chart.');
  const val = (row) => (row[col.name] === null || row[col.name] === undefined ? NaN
    : col.money && row.currency ? minorToMajor(row[col.name], row.currency) : Number(row[col.name]));
  const ranked = [...d.series.values()]
    .map((s) => ({ s, last: s.points.get(s.lastX), latest: val(s.points.get(s.lastX)) }))
    .filter((e) => Number.isFinite(e.latest))
    .sort((a, b) => b.latest - a.latest).slice(0, TOP_SERIES);
  if (!ranked.length) return chartMessage(`No values for ${col.label} yet.`);

  let x0 = Infinity, x1 = -Infinity, y0 = 0, y1 = 0;
  for (const { s } of ranked) for (const [x, row] of s.points) {
    const v = val(row);
    if (Number.isFinite(v)) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, v); y1 = Math.max(y1, v); }
  }
  if (x0 === x1) { x0 -= 30000; x1 += 30000; }
  const box = $('#chart'), W = Math.max(box.clientWidth, 200), H = Math.max(box.clientHeight, 120);
  const m = { l: 64, r: 16, t: 12, b: 30 };   // margins for the axis labels
  const yt = niceTicks(y0, y1, 5);
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - yt.lo) / (yt.hi - yt.lo)) * (H - m.t - m.b);
  let svg = `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(col.label)} per window">`;
  for (const v of yt.ticks) {
    svg += `<line class="grid-line${v === 0 ? ' zero' : ''}" x1="${m.l}" x2="${W - m.r}" y1="${Y(v)}" y2="${Y(v)}"/>`;
    svg += `<text class="tick" x="${m.l - 8}" y="${Y(v) + 4}" text-anchor="end">${esc(fmtCompact(v))}</text>`;
  }
  for (const [t, label] of timeTicks(x0, x1, Math.max(2, Math.floor((W - m.l) / 110)))) {
    svg += `<line class="axis-tick" x1="${X(t)}" x2="${X(t)}" y1="${H - m.b}" y2="${H - m.b + 5}"/>`;
    svg += `<text class="tick" x="${X(t)}" y="${H - m.b + 18}" text-anchor="middle">${label}</text>`;
  }
  svg += `<line class="axis" x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}"/>`;
  svg += `<text class="tick" x="${W - m.r}" y="${H - 2}" text-anchor="end">UTC</text>`;
  ranked.forEach(({ s }, i) => {
    const pts = [...s.points.entries()].map(([x, row]) => [x, val(row)]).filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    const color = PALETTE[i % PALETTE.length];
    const xy = pts.map(([x, v]) => [X(x).toFixed(1), Y(v).toFixed(1)]);
    svg += `<polyline fill="none" stroke="${color}" stroke-width="1.75" stroke-linejoin="round" points="${xy.join(' ')}"/>`;
    if (pts.length <= 60) {   // dots (with a hover title) while they can still be told apart
      xy.forEach(([cx, cy], j) => { svg += `<circle cx="${cx}" cy="${cy}" r="2.5" fill="${color}"><title>` +
        `${esc(s.key)} · ${esc(fmtTime(pts[j][0]))} · ${esc(fmtCompact(pts[j][1]))}</title></circle>`; });
    }
  });
  box.innerHTML = svg + '</svg>';
  $('#legend').innerHTML = ranked.map(({ s, last }, i) => {
    const shown = col.money && last.currency ? fmtMoney(last[col.name], last.currency) : fmtNum(last[col.name]);
    return `<li title="${esc(s.key)}"><span class="swatch" style="background:${PALETTE[i % PALETTE.length]}"></span>` +
      `<span class="legend-key">${esc(s.key)}</span><span class="legend-val">${esc(shown)}</span></li>`;
  }).join('') + (d.series.size > ranked.length ? `<li class="legend-more">top ${ranked.length} of ${fmtNum(d.series.size)} series</li>` : '');
}

// ---- Alert feed: live tails of alert-like queries ---------------------------------------------
const alerts = { streams: new Map(), lines: [], dirty: false, note: '' };

// Which rows of a query belong in the feed: null = none; 'all'; or a Set of matching sink names
// (a multi-sink pipeline such as risk_pipeline also writes settlement rows, which are not alerts).
function alertFilter(q) {
  const sinks = (q.sinks || []).map((s) => s.name);
  const hits = sinks.filter((n) => ALERT_WORDS.test(n));
  if (hits.length && sinks.length > 1) return new Set(hits);
  return ALERT_WORDS.test(q.name) || hits.length ? 'all' : null;
}
function syncAlertStreams() {
  const want = new Map(queries.filter((q) => q.state === 'running' && alertFilter(q)).map((q) => [q.name, alertFilter(q)]));
  for (const [name, st] of alerts.streams) if (!want.has(name)) { clearTimeout(st.retry); st.es.close(); alerts.streams.delete(name); }
  for (const [name, filter] of want) {
    if (alerts.streams.has(name)) { alerts.streams.get(name).filter = filter; continue; }
    const st = { name, filter, es: null, retry: null, backoff: 1000 };
    alerts.streams.set(name, st);
    openAlert(st);
  }
  const names = [...alerts.streams.keys()];
  const text = names.length ? 'watching ' + names.join(', ') : 'no alert queries running';
  Object.assign($('#alert-subs'), { textContent: text, title: text });
}
function openAlert(st) {
  const es = new EventSource(`/api/queries/${enc(st.name)}/results`);
  st.es = es;
  const retry = (delay) => {
    es.close();
    if (alerts.streams.get(st.name) !== st) return;
    st.retry = setTimeout(() => openAlert(st), delay);
  };
  es.onopen = () => { st.backoff = 1000; if (alerts.note.startsWith(st.name + ':')) { alerts.note = ''; alerts.dirty = true; } };
  es.onmessage = (e) => {
    let row = null;
    try { row = parseJSON(e.data); } catch (_) { /* skip a malformed row */ }
    if (!row || (st.filter instanceof Set && !st.filter.has(row._sink))) return;
    alerts.lines.unshift({ query: st.name, row, at: Date.now() });
    if (alerts.lines.length > MAX_ALERTS) alerts.lines.length = MAX_ALERTS;
    alerts.dirty = true;
  };
  const dropped = (e) => {
    alerts.note = `${st.name}: ${droppedText(e)} · reconnecting`;
    alerts.dirty = true;
    toast('Alert feed, ' + alerts.note, 'error');
    retry(1000);
  };
  es.addEventListener('dropped', dropped);
  es.onerror = (e) => {
    if (typeof e.data === 'string') { dropped(e); return; }   // a server-sent `event: error`
    retry(st.backoff);
    st.backoff = Math.min(st.backoff * 2, 15000);
  };
}
// The row's key fields: ids first, then counts and amounts (money when the row has a currency).
function alertFields(row) {
  const out = [];
  for (const k of ['card_id', 'merchant_id']) if (row[k] !== null && row[k] !== undefined) out.push([k, String(row[k])]);
  for (const [k, v] of Object.entries(row)) {
    if (['_sink', 'currency', 'card_id', 'merchant_id'].includes(k) || v === null) continue;
    const minor = k.endsWith('_minor');
    if (typeof v !== 'number' && !(minor && /^-?\d+$/.test(v))) continue;
    if (minor && row.currency) out.push([k.slice(0, -6), fmtMoney(v, row.currency)]);
    else out.push([k, minor ? String(v) : fmtNum(v)]);
  }
  return out;
}
function renderAlerts() {
  alerts.dirty = false;
  const note = alerts.note ? `<div class="alert-note">${esc(alerts.note)}</div>` : '';
  if (!alerts.lines.length) {
    $('#alerts').innerHTML = note + `<div class="empty">${alerts.streams.size ? 'No alerts since this page was opened.'
      : 'Alerts appear here from running queries named like alert, risk, velocity or fraud.'}</div>`;
    return;
  }
  $('#alerts').innerHTML = note + alerts.lines.map(({ query, row, at }) => {
    const t = row.window_end ?? row.event_time;
    const kv = alertFields(row);
    const fields = kv.map(([k, v]) => `<span class="kv"><span class="k">${esc(k)}</span> ${esc(v)}</span>`).join('');
    const src = esc(query) + (row._sink ? ' / ' + esc(row._sink) : '');
    return `<div class="alert" title="${esc(kv.map(([k, v]) => `${k} ${v}`).join(' · '))}"><div class="alert-fields">${fields}</div>` +
      `<div class="alert-meta"><span class="time">${esc(fmtTime(t ?? at))}${t == null ? ' (received)' : ''}</span>` +
      `<span>${src}</span></div></div>`;
  }).join('');
}

// ---- Boot: wire events, start polling, one render loop for all throttled views ----------------
function boot() {
  $('#queries tbody').addEventListener('click', onQueryAction);
  $('#token-form').addEventListener('submit', (e) => { e.preventDefault(); location.href = '/?token=' + enc($('#token-input').value.trim()); });
  const ta = $('#q-sql');
  ta.placeholder = EXAMPLE_SQL;
  ta.addEventListener('input', () => {
    const hadMark = ed.errLine !== null;
    ed.errLine = null;   // lines may have moved; the message under the editor stays
    if (hadMark || Math.max(ta.value.split('\n').length, 12) !== ed.lines) renderGutter();
  });
  ta.addEventListener('scroll', syncEditorScroll);
  $('#example-btn').addEventListener('click', () => {
    ta.value = EXAMPLE_SQL; renderGutter();
    if (!$('#q-name').value) $('#q-name').value = 'settlement_per_minute';
  });
  $('#submit-form').addEventListener('submit', onSubmit);
  $('#sink-select').addEventListener('change', (e) => { res.sink = e.target.value; res.colKey = ''; renderResults(); drawChart(); });
  $('#y-select').addEventListener('change', (e) => { yCol = e.target.value; drawChart(); });
  let resizeTimer = null;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawChart, 150); });

  renderGutter(); renderResults(); renderAlerts(); drawChart();
  setInterval(() => {
    if (res.dirty) renderResults();
    if (alerts.dirty) renderAlerts();
    if (chartDirty && Date.now() - chartDrawn >= 1000) drawChart();
  }, 250);
  poll();
}
document.addEventListener('DOMContentLoaded', boot);
