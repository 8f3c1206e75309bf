// The pipos checkout page. Talks only to the terminal's own API; live updates come from the
// same server-sent event stream the cash register uses. Money stays integer minor units.
// Its credential is the session cookie the kiosk earned (HttpOnly: this script never sees
// it); the browser sends it with the page's own requests only.
"use strict";

const SIMULATOR = document.querySelector('meta[name="pipos-simulator"]').content === "true";
const SIM_PHONE = document.querySelector('meta[name="pipos-sim-phone"]').content === "true";
const $ = (id) => document.getElementById(id);

let status = { currency: 978, currency_alpha: "EUR", currency_exponent: 2, queue: { count: 0 } };
let digits = "";          // what the keypad typed, as minor units
let current = null;       // the transaction of the sale screen (null: the keypad)
// The newest revision seen of each transaction. Views come by three paths that race (an
// API answer, a GET, the event stream); the terminal's journal raises a transaction's
// revision with each of its changes, so a view of it that arrives with a revision not above
// the one seen is older than what the page knows and is dropped (a late answer must never
// bring back a finished sale's prompt, or hide the code the event already showed).
const seenRevision = new Map();
let resultUnseen = false; // the sale screen's sale ended while the merchant was elsewhere
let receiptTxn = null;    // the transaction whose receipt is shown
let receiptFrom = "result";
let receiptCopy = "customer";
let refundTarget = null;
let pinAction = null;     // what the PIN dialog is for: "refund" or "end_of_day"
let shownCode = null;     // the sale whose merchant-presented code is on screen
let restartNote = null;   // the last `restart` event: the card asked for another tap
let strings = {};         // the page's labels in the terminal's language (GET /api/v1/ui-strings)
let language = null;      // the language of `strings`
let wantedLanguage = null;

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    // The session has ended (hours unused, a day old, a reset terminal): the terminal's own
    // page then says how to open the kiosk again. Nothing after this call goes on meanwhile.
    location.reload();
    return new Promise(() => {});
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = data && data.error ? data.error : {};
    const error = new Error(detail.message || "HTTP " + response.status);
    error.status = response.status;
    error.code = detail.code || "";
    error.detail = detail;
    throw error;
  }
  return data;
}

// What the page says about an API error, in the terminal's language: the label of its code
// ("error_" + code, or "error_" + code + "_" + reason when the error gives one) with the
// numbers the error carries, else the API's own message.
function errorText(error) {
  const detail = error.detail || {};
  const values = { tries: detail.tries_left, seconds: detail.retry_after,
    message: error.message, status: error.status };
  const base = "error_" + (error.code || (error.status ? "http" : ""));
  const keys = typeof detail.reason === "string" ? [base + "_" + detail.reason, base] : [base];
  for (const key of keys) {
    if (error.code !== undefined && Object.prototype.hasOwnProperty.call(strings, key)) {
      return t(key, values);
    }
  }
  return error.message;
}

// --- labels, in the terminal's language ---------------------------------------------------

// The label `key` with its "{name}" placeholders filled from `values`; `fallback` (default: the
// key itself, so a missing label is visible) when the table has no such key. The English text
// in index.html stands in for the instant before the strings arrive.
function t(key, values, fallback) {
  const has = Object.prototype.hasOwnProperty.call(strings, key);
  const text = has ? strings[key] : (fallback === undefined ? key : fallback);
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    values && Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole);
}

function applyStrings() {
  document.documentElement.lang = t("html_lang");
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  for (const element of document.querySelectorAll("[data-i18n-aria]")) {
    element.setAttribute("aria-label", t(element.dataset.i18nAria));
  }
}

// Load and show the labels of `lang` (from the status event) unless they are already shown;
// then redraw what was drawn in the old language.
async function setLanguage(lang) {
  if (!lang || lang === wantedLanguage) return;
  if (lang === language) { wantedLanguage = null; return; }  // drops a pending switch
  wantedLanguage = lang;
  let data;
  try {
    data = await api("GET", "/api/v1/ui-strings?lang=" + encodeURIComponent(lang));
  } catch (error) {
    if (wantedLanguage === lang) wantedLanguage = null;  // retried at the next status event
    return;
  }
  if (wantedLanguage !== lang) return;  // a newer language arrived meanwhile
  strings = data.strings;
  language = lang;
  wantedLanguage = null;
  applyStrings();
  document.body.dataset.language = lang;
  renderBanner();
  renderAmount();
  if (current && current.state && current.state !== "in_progress") renderResult(current);
  // The running sale's prompt and the result's messages are the server's: ask again, in
  // the new language (same revision: the same state, other words).
  if (current) refreshCurrent();
  if (refundTarget) $("pin-title").textContent = t("refund_title", { id: refundTarget.id });
  if (!$("view-list").classList.contains("hidden")) loadList();
  if (!$("view-totals").classList.contains("hidden")) loadTotals();
}

// --- money, without floats -------------------------------------------------------------

function formatMinor(minor, exponent) {
  const negative = minor < 0;
  let text = String(Math.abs(minor));
  if (exponent === 0) return (negative ? "-" : "") + text;
  text = text.padStart(exponent + 1, "0");
  return (negative ? "-" : "") + text.slice(0, -exponent) + "." + text.slice(-exponent);
}

function parseMajor(text, exponent) {
  const match = /^\s*(\d+)(?:\.(\d*))?\s*$/.exec(text);
  if (!match) return null;
  const decimals = match[2] || "";
  if (decimals.length > exponent) return null;
  const minor = (match[1] + decimals.padEnd(exponent, "0")).replace(/^0+(?=\d)/, "");
  return Number.parseInt(minor, 10);
}

function amountText(minor) {
  return formatMinor(minor, status.currency_exponent) + " " + status.currency_alpha;
}

// --- views -------------------------------------------------------------------------------

function show(view) {
  // The Sale tab: a running sale's waiting screen (with Cancel); the result of one that
  // ended while the merchant was elsewhere; otherwise the keypad.
  if (view === "sale" && current) {
    if (current.state === "in_progress") view = "wait";
    else if (resultUnseen) view = "result";
    else current = null;
  }
  if (view === "result") resultUnseen = false;
  for (const section of document.querySelectorAll(".view")) section.classList.add("hidden");
  $("view-" + view).classList.remove("hidden");
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === view ||
      (tab.dataset.view === "sale" && ["wait", "result", "receipt"].includes(view)));
  }
  if (view === "list") loadList();
  if (view === "totals") loadTotals();
}

function renderAmount() {
  const minor = digits ? Number.parseInt(digits, 10) : 0;
  $("amount-display").textContent = formatMinor(minor, status.currency_exponent);
  $("currency-label").textContent = status.currency_alpha;
  renderQrOption();
}

// The merchant-presented code needs the bank to open its order: not offered while the
// terminal knows the bank is not answering.
function renderQrOption() {
  const codes = status.codes || {};
  $("charge-qr").classList.toggle("hidden", !codes.merchant_presented || status.host_online === false);
}

function renderBanner() {
  const queue = status.queue || { count: 0 };
  const banner = $("offline-banner");
  const waiting = queue.count > 0;
  if (status.host_online === false || waiting) {
    const parts = [];
    if (status.host_online === false) {
      // What really happens to the next card payment: taken offline up to the limit, or
      // declined when offline acceptance is off (status.offline_acceptance).
      const offline = status.offline_acceptance || {};
      const failure = (status.host || {}).last_failure || "no_answer";
      const why = t("host_failure_" + failure, null, t("host_failure_no_answer"));
      const reason = why.charAt(0).toUpperCase() + why.slice(1);
      parts.push(offline.enabled
        ? t("banner_offline_up_to", { reason, amount: offline.max_amount_text })
        : t("banner_offline_declined", { reason }));
    }
    if (waiting) {
      parts.push(t(queue.count === 1 ? "banner_waiting_one" : "banner_waiting_other",
        { count: queue.count, amounts: (queue.text || []).join(", ") }));
    }
    $("offline-text").textContent = parts.join(" ");
    $("offline-title").textContent = t(status.host_online === false ? "banner_offline" : "banner_not_sent");
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
  }
  // Offline sales the bank declined after the fact, until the merchant acknowledges them
  // (the journal keeps the acknowledgement: the banner stays gone after a restart).
  const flagged = $("flagged-banner");
  const declines = (status.offline_declines || {}).unacknowledged || 0;
  if (declines > 0) {
    $("flagged-text").textContent = t("banner_flagged", { count: declines });
    flagged.classList.remove("hidden");
  } else {
    flagged.classList.add("hidden");
  }
  renderQrOption();
}

// Show `txn` on the sale screen unless the page has seen it at this revision or a newer one
// (see seenRevision). Every path that brings a transaction to the screen goes through here.
// `own`: the answer to the merchant's own action on this page (Charge, Cancel, Refund),
// shown where the merchant is. Anything else (events, polls) updates the sale screen's own
// transaction and brings a new running sale forward, but never pulls a finished
// transaction over the keypad or the list the merchant went to. Nothing finished ever
// replaces a running sale on the waiting screen, whoever asked. `again`: the same revision
// is welcome (it was asked for again, in another language).
function offer(txn, own, again) {
  if (!txn || typeof txn.revision !== "number") return false;
  const seen = seenRevision.get(txn.id) || 0;
  if (txn.revision < seen || (txn.revision === seen && !again)) return false;
  seenRevision.set(txn.id, txn.revision);
  if (seenRevision.size > 200) seenRevision.delete(seenRevision.keys().next().value);
  const mine = current && current.id === txn.id;
  if (!mine && txn.state !== "in_progress" && current && current.state === "in_progress") {
    return false;  // the merchant is looking at a running sale: keep it
  }
  if (!mine && !own && txn.state !== "in_progress") return false;
  if (mine && !own && txn.state !== "in_progress" && !(isShown("wait") || isShown("result"))) {
    // Ended while the merchant was elsewhere: the Sale tab shows its result.
    if (current.state === "in_progress") resultUnseen = true;
    current = txn;
    return true;
  }
  renderTransaction(txn);
  return true;
}

// The sale screen's transaction as the terminal has it now (after a language switch).
async function refreshCurrent() {
  const wanted = current;
  if (!wanted) return;
  try {
    const txn = await api("GET", "/api/v1/transactions/" + wanted.id);
    if (current && current.id === wanted.id) offer(txn, false, true);
  } catch (error) {
    // The next event or resume brings it.
  }
}

function isShown(view) {
  return !$("view-" + view).classList.contains("hidden");
}

// Ask the terminal which sale is running and show it with its Cancel button; also refresh a
// sale still shown as running. On load, when the merchant comes back to the Sale tab or the
// browser tab, after a refused Charge, and whenever the live stream (re)connects: a running
// sale is never hidden behind the keypad, and a missed event never leaves a stale screen.
async function resumeSale() {
  try {
    const state = await api("GET", "/api/v1/status");
    if (current && current.state === "in_progress" && current.id !== state.current) {
      offer(await api("GET", "/api/v1/transactions/" + current.id));
    }
    if (state.current) {
      const txn = await api("GET", "/api/v1/transactions/" + state.current);
      if (txn.kind === "sale" && (txn.id === (current && current.id) ||
          txn.state === "in_progress")) offer(txn);
    }
  } catch (error) {
    // Offline from the terminal itself: the live stream reconnects and calls this again.
  }
}

function renderTransaction(txn) {
  current = txn;
  if (!txn.state || txn.state === "in_progress") {
    $("wait-amount").textContent = txn.amount_text;
    // Waiting for a second tap: what the card said ("see phone ...") stays on screen.
    const again = txn.stage === "waiting_for_card_again";
    $("prompt").textContent = again && restartNote && restartNote.id === txn.id
      ? restartNote.message : (txn.prompt || t("prompt"));
    $("cancel").disabled = !txn.cancellable;
    const waiting = txn.stage === "waiting_for_card";
    $("sim-cards").classList.toggle("hidden", !SIMULATOR || !(waiting || again));
    $("sim-phone").classList.toggle("hidden", !SIM_PHONE || !waiting);
    $("sim-mpm").classList.toggle("hidden", !SIM_PHONE || !txn.qr_svg);
    $("spinner").classList.toggle("hidden", Boolean(txn.qr_svg));
    if (txn.stage !== "waiting_for_card") $("scan-note").textContent = "";
    showMerchantCode(txn);
    show("wait");
    return;
  }
  $("mpm").classList.add("hidden");
  $("mpm").textContent = "";
  shownCode = null;
  renderResult(txn);
  show("result");
}

function renderResult(txn) {
  const ok = txn.state === "approved" || txn.state === "approved_offline";
  $("result-icon").textContent = ok ? "\u2714" : "\u2716";
  $("result-title").textContent = ok
    ? t(txn.state === "approved_offline" ? "result_approved_offline" : "result_approved")
    : t(txn.state === "cancelled" ? "result_cancelled" : "result_declined");
  $("result-title").className = "result-title " + (ok ? "ok" : "bad");
  $("result-merchant").textContent = txn.message ? txn.message.merchant : "";
  $("result-customer").textContent = txn.message ? txn.message.customer : "";
  $("show-receipt").classList.toggle("hidden", txn.state === "cancelled");
}

async function showMerchantCode(txn) {
  const box = $("mpm");
  if (!txn.qr_svg) { box.classList.add("hidden"); box.textContent = ""; shownCode = null; return; }
  if (shownCode === txn.id) return;
  shownCode = txn.id;
  try {
    const svg = await api("GET", txn.qr_svg);
    // An SVG the terminal rendered itself (segno) from its own payload.
    if (shownCode === txn.id) { box.innerHTML = svg; box.classList.remove("hidden"); }
  } catch (error) {
    $("prompt").textContent = errorText(error);
  }
}

// --- sale --------------------------------------------------------------------------------

$("keypad").addEventListener("click", (event) => {
  const key = event.target.dataset && event.target.dataset.key;
  if (!key) return;
  if (key === "C") digits = "";
  else if ((digits + key).replace(/^0+/, "").length <= 12) digits = (digits + key).replace(/^0+/, "");
  renderAmount();
});

// A Charge the terminal refused. "Busy" means a sale is already running (started by the
// register, or before a reload): show that sale, with its Cancel, instead of a dead end.
function saleRefused(error) {
  if (error.status === 409) resumeSale();
  $("sale-error").textContent = errorText(error);
}

$("charge").addEventListener("click", async () => {
  $("sale-error").textContent = "";
  $("scan-note").textContent = "";
  const minor = digits ? Number.parseInt(digits, 10) : 0;
  if (minor <= 0) { $("sale-error").textContent = t("error_no_amount"); return; }
  try {
    const txn = await api("POST", "/api/v1/sales", { amount: minor, currency: status.currency });
    digits = "";
    renderAmount();
    offer(txn, true);
  } catch (error) {
    saleRefused(error);
  }
});

$("charge-qr").addEventListener("click", async () => {
  $("sale-error").textContent = "";
  $("scan-note").textContent = "";
  const minor = digits ? Number.parseInt(digits, 10) : 0;
  if (minor <= 0) { $("sale-error").textContent = t("error_no_amount"); return; }
  try {
    const txn = await api("POST", "/api/v1/sales",
      { amount: minor, currency: status.currency, method: "merchant_qr" });
    digits = "";
    renderAmount();
    offer(txn, true);
  } catch (error) {
    saleRefused(error);
  }
});

$("sim-phone").addEventListener("click", async (event) => {
  const code = event.target.dataset && event.target.dataset.phone;
  if (!code) return;
  try { await api("POST", "/api/v1/simulator/phone", { code }); }
  catch (error) { $("scan-note").textContent = errorText(error); }
});

$("sim-pay-mpm").addEventListener("click", async () => {
  if (!current) return;
  try { await api("POST", "/api/v1/simulator/pay-merchant-qr", { transaction_id: current.id }); }
  catch (error) { $("scan-note").textContent = errorText(error); }
});

$("cancel").addEventListener("click", async () => {
  if (!current) return;
  try { offer(await api("POST", "/api/v1/transactions/" + current.id + "/cancel"), true); }
  catch (error) {
    $("prompt").textContent = errorText(error);
    resumeSale();  // too late, or already over: show how it stands now
  }
});

$("sim-cards").addEventListener("click", async (event) => {
  const card = event.target.dataset && event.target.dataset.card;
  if (!card) return;
  try { await api("POST", "/api/v1/simulator/present", { card }); }
  catch (error) { $("prompt").textContent = errorText(error); }
});

$("new-sale").addEventListener("click", () => {
  current = null;  // the merchant has left that sale: the Sale tab is the keypad again
  $("sale-error").textContent = "";
  show("sale");
});

// --- receipts ----------------------------------------------------------------------------

async function loadReceipt() {
  const html = await api("GET", "/api/v1/transactions/" + receiptTxn.id +
    "/receipt?format=html&copy=" + receiptCopy);
  $("receipt").innerHTML = html;  // rendered by the terminal from its own journal, escaped there
}

$("show-receipt").addEventListener("click", async () => {
  receiptTxn = current;
  receiptFrom = "result";
  receiptCopy = "customer";
  await loadReceipt();
  show("receipt");
});
for (const button of document.querySelectorAll(".copy-btn")) {
  button.addEventListener("click", async () => { receiptCopy = button.dataset.copy; await loadReceipt(); });
}
$("print-receipt").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/transactions/" + receiptTxn.id + "/print", { copies: [receiptCopy] }); }
  catch (error) { alert(errorText(error)); }
});
$("receipt-back").addEventListener("click", () => show(receiptFrom));

// --- transactions, refunds -----------------------------------------------------------------

let attentionOnly = false;  // the list's "needs attention" filter

async function loadList() {
  const data = await api("GET", "/api/v1/transactions?limit=50" + (attentionOnly ? "&attention=1" : ""));
  const rows = $("txn-rows");
  rows.textContent = "";
  for (const txn of data.transactions) {
    const tr = document.createElement("tr");
    tr.dataset.id = txn.id;
    const time = txn.created_at.slice(11, 19);
    const cells = [time, t("kind_" + txn.kind, null, txn.kind), (txn.kind === "refund" ? "-" : "") + txn.amount_text,
      txn.masked_pan || "", t("state_" + txn.state, null, txn.state.replace(/_/g, " "))];
    cells.forEach((text, index) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (index === 2) td.className = "num";
      if (index === 4) td.className = "state-" + txn.state;
      if (index === 4 && txn.offline_status) {
        // An offline sale says where it is: waiting to be sent, sent, or declined by the bank.
        const mark = document.createElement("span");
        mark.className = "offline-mark offline-" + txn.offline_status;
        mark.dataset.testid = "offline-status";
        mark.textContent = t("offline_" + txn.offline_status, null, txn.offline_status);
        td.appendChild(mark);
        if (txn.offline_status === "declined") {
          // No money came in: the row reads red, whatever the receipt said at the counter.
          td.classList.add("offline-declined");
          tr.classList.add("needs-attention");
        }
      }
      tr.appendChild(td);
    });
    const actions = document.createElement("td");
    if (txn.refundable_amount > 0) {
      const button = document.createElement("button");
      button.className = "secondary refund-btn";
      button.textContent = t("refund");
      button.addEventListener("click", () => openRefund(txn));
      actions.appendChild(button);
    }
    const receipt = document.createElement("button");
    receipt.className = "secondary";
    receipt.textContent = t("receipt");
    receipt.addEventListener("click", async () => { receiptTxn = txn; receiptFrom = "list"; receiptCopy = "customer"; await loadReceipt(); show("receipt"); });
    if (txn.state !== "in_progress" && txn.state !== "cancelled") actions.appendChild(receipt);
    tr.appendChild(actions);
    rows.appendChild(tr);
  }
}

// The merchant PIN dialog, for a refund (with its amount) or the end of day (PIN only).
function openPin(action, title) {
  pinAction = action;
  $("pin-title").textContent = title;
  $("refund-amount-row").classList.toggle("hidden", action !== "refund");
  $("pin-ok").textContent = t(action === "refund" ? "refund" : "end_of_day");
  $("pin-input").value = "";
  $("pin-error").textContent = "";
  $("pin-dialog").showModal();
}

function openRefund(txn) {
  refundTarget = txn;
  $("refund-amount").value = formatMinor(txn.refundable_amount, status.currency_exponent);
  openPin("refund", t("refund_title", { id: txn.id }));
}

async function refundWithPin() {
  const amount = parseMajor($("refund-amount").value, status.currency_exponent);
  if (amount === null || amount <= 0) { $("pin-error").textContent = t("error_bad_amount"); return; }
  const txn = await api("POST", "/api/v1/transactions/" + refundTarget.id + "/refund",
    { pin: $("pin-input").value, amount });
  $("pin-dialog").close();
  offer(txn, true);
}

async function endOfDayWithPin() {
  const report = await api("POST", "/api/v1/end-of-day", { pin: $("pin-input").value });
  $("pin-dialog").close();
  $("eod-result").textContent = [t("eod_closed", { batch: report.batch_id, count: report.transactions })]
    .concat(report.host_totals.map((line) =>
      t("eod_net", { brand: line.brand, amount: amountText(line.net_amount) }))).join("\n");
  loadTotals();
}

$("pin-ok").addEventListener("click", async (event) => {
  event.preventDefault();
  try {
    if (pinAction === "refund") await refundWithPin();
    else if (pinAction === "end_of_day") await endOfDayWithPin();
  } catch (error) {
    $("pin-error").textContent = errorText(error);
  }
});
$("pin-cancel").addEventListener("click", (event) => { event.preventDefault(); $("pin-dialog").close(); });
$("refresh-list").addEventListener("click", loadList);
$("attention-filter").addEventListener("click", () => {
  attentionOnly = !attentionOnly;
  $("attention-filter").setAttribute("aria-pressed", String(attentionOnly));
  loadList();
});
$("flagged-ack").addEventListener("click", async () => {
  try {
    await api("POST", "/api/v1/offline-declines/acknowledge");
    status.offline_declines = { unacknowledged: 0 };
    renderBanner();
  } catch (error) { $("flagged-text").textContent = errorText(error); }
});
// Every sync says what it did ("3 sent", "Could not send: bank unreachable").
$("sync-now").addEventListener("click", async () => {
  const note = $("sync-result");
  note.textContent = t("sync_sending");
  note.classList.remove("warn-text");
  try {
    const answer = await api("POST", "/api/v1/queue/sync");
    note.textContent = answer.result.text;
    note.classList.toggle("warn-text", !answer.result.ok);
  } catch (error) {
    note.textContent = errorText(error);
    note.classList.add("warn-text");
  }
  await refreshStatus();
  loadList();
});

// --- totals ------------------------------------------------------------------------------

async function loadTotals() {
  const data = await api("GET", "/api/v1/totals");
  const rows = $("totals-rows");
  rows.textContent = "";
  for (const line of data.totals) {
    const tr = document.createElement("tr");
    const cells = [line.brand,
      line.sales_count + " / " + formatMinor(line.sales_amount, status.currency_exponent),
      line.refunds_count + " / " + formatMinor(line.refunds_amount, status.currency_exponent),
      line.net_text,
      line.offline_count + " / " + formatMinor(line.offline_amount, status.currency_exponent)];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
}

// Closing the batch needs the merchant PIN, as a refund does.
$("end-of-day").addEventListener("click", () => {
  $("eod-result").textContent = "";
  openPin("end_of_day", t("end_of_day"));
});

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    show(tab.dataset.view);
    if (tab.dataset.view === "sale") resumeSale();
  });
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) resumeSale(); });

// --- live updates --------------------------------------------------------------------------

async function refreshStatus() {
  status = await api("GET", "/api/v1/status");
  await setLanguage(status.language || "en");
  renderBanner();
  renderAmount();
}

function connect() {
  // Same origin: the browser sends the page's session cookie with the stream's request.
  const source = new EventSource("/api/v1/events");
  source.addEventListener("status", (event) => {
    status = JSON.parse(event.data);
    renderBanner();
    setLanguage(status.language);
  });
  source.addEventListener("transaction", (event) => {
    const txn = JSON.parse(event.data);
    if (current && txn.id === current.id && txn.kind === "sale") offer(txn);
    else if (txn.kind === "sale" && txn.state === "in_progress" &&
             (!current || current.state !== "in_progress")) offer(txn);
  });
  // The card asked for another tap (Start B): the sale goes on; say what the card said.
  source.addEventListener("restart", (event) => {
    const note = JSON.parse(event.data);
    restartNote = note;
    if (current && note.id === current.id && current.state === "in_progress") {
      $("prompt").textContent = note.message;
    }
  });
  source.addEventListener("scan_rejected", (event) => {
    const note = JSON.parse(event.data);
    if (current && note.id === current.id) $("scan-note").textContent = note.message || note.reason;
  });
  source.onopen = () => {
    document.body.dataset.live = "true";
    // Connected first, asked second: whatever changes from here on also comes as an event.
    resumeSale();
  };
  source.onerror = () => {
    // A dropped connection is retried by the browser; a refused one (the page's session has
    // ended: 401) closes the stream for good. Then ask the API: its 401 shows how to open the
    // kiosk again; an answer means the stream can be opened anew.
    if (source.readyState !== EventSource.CLOSED) return;
    const again = () => refreshStatus().then(connect, () => setTimeout(again, 5000));
    setTimeout(again, 1000);
  };
}

refreshStatus().then(connect);
