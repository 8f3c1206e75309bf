// The pipos checkout page. Talks only to the terminal's own API; live updates come from the
// same server-sent event stream the cash register uses. Money stays integer minor units.
// Its credential is the session cookie the kiosk earned (HttpOnly: this script never sees
// it); the browser sends it with the page's own requests only.
"use strict";

const SIMULATOR = document.querySelector('meta[name="pipos-simulator"]').content === "true";
const SIM_PHONE = document.querySelector('meta[name="pipos-sim-phone"]').content === "true";
const $ = (id) => document.getElementById(id);

// How long the screen waits before it goes idle (keypad untouched, no sale) and before a
// result returns to the keypad by itself: a counter screen is never left on an old result.
const IDLE_AFTER_MS = 60000;
const RESULT_RETURN_MS = 30000;
const LIST_ROW_PX = 40;  // a transaction row's height: a page of the list fills its box

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
let pinAction = null;     // what the PIN dialog is for: "refund", "void" or "end_of_day"
let pinTarget = null;     // the transaction a refund or void is for
let shownCode = null;     // the sale whose merchant-presented code is on screen
let restartNote = null;   // the last `restart` event: the card asked for another tap
let strings = {};         // the page's labels in the terminal's language (GET /api/v1/ui-strings)
let language = null;      // the language of `strings`
let wantedLanguage = null;
let lastStage = null;     // the sale screen's sale's stage, to hear the card's tap once
let shownReport = null;   // the end-of-day report on the Totals tab (a closed batch), or null
let display = null;       // the register's display request (GET /api/v1/display), or null
let tipOffer = null;      // the tip screen's offer (GET /api/v1/transactions/{id}/tip)
let tipDigits = null;     // a tip being typed, as minor units (null: the presets are shown)

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
  // A failed fetch (the terminal's own server gone) has no code: say so, in the language.
  if (error.status === undefined) return t("error_terminal_unreachable");
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
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) {
    element.setAttribute("placeholder", t(element.dataset.i18nPlaceholder));
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
  renderIdleClock();
  if (current && current.state && current.state !== "in_progress") renderResult(current);
  // The running sale's prompt and the result's messages are the server's: ask again, in
  // the new language (same revision: the same state, other words).
  if (current) refreshCurrent();
  if (pinTarget && $("pin-dialog").open) $("pin-title").textContent = pinTitle(pinAction, pinTarget);
  if (isShown("list")) loadList();
  if (isShown("totals")) loadTotals();
}

// --- money, without floats -------------------------------------------------------------

// The kiosk's decimal separator ("," on a German shop): the dialogs' keypads offer it, and
// amounts are read with either separator.
const DECIMAL = (() => {
  try {
    const part = new Intl.NumberFormat(navigator.language).formatToParts(1.5)
      .find((p) => p.type === "decimal");
    return part ? part.value : ".";
  } catch (error) {
    return ".";
  }
})();

function formatMinor(minor, exponent) {
  const negative = minor < 0;
  let text = String(Math.abs(minor));
  if (exponent === 0) return (negative ? "-" : "") + text;
  text = text.padStart(exponent + 1, "0");
  return (negative ? "-" : "") + text.slice(0, -exponent) + "." + text.slice(-exponent);
}

// An amount typed by the merchant, in minor units, or null. "12.34", "12,34" and "12" are
// 12.34 and 12.00; no grouping ("1,000" in a 2-decimal currency is refused, never read as a
// thousand or as one).
function parseMajor(text, exponent) {
  const match = /^\s*(\d+)(?:[.,](\d*))?\s*$/.exec(text);
  if (!match) return null;
  const decimals = match[2] || "";
  if (decimals.length > exponent) return null;
  const minor = (match[1] + decimals.padEnd(exponent, "0")).replace(/^0+(?=\d)/, "");
  if (minor.length > 12) return null;
  return Number.parseInt(minor, 10);
}

function amountText(minor, currencyAlpha) {
  return formatMinor(minor, status.currency_exponent) + " " + (currencyAlpha || status.currency_alpha);
}

// Date and time of a journal timestamp, in the kiosk's locale (the terminal's language for
// Chinese): "02/12/2026, 17:55" or "2026/12/02 17:55".
function locale() {
  return language === "zh" ? "zh-CN" : (navigator.language || "en-GB");
}

function whenText(iso, withDate) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso || "";
  const options = { hour: "2-digit", minute: "2-digit" };
  if (withDate) Object.assign(options, { year: "numeric", month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(locale(), options).format(date);
}

function isoDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
}

// --- sound and voice: Web Audio tones, the kiosk's own voices; nothing from the network ---

let audio = null;
let nextToneAt = 0;  // tones queue one after another (the tap, then the result), never overlap

// Browsers start audio only after a gesture: the first touch on the page opens it.
function wakeAudio() {
  if (!audio && (window.AudioContext || window.webkitAudioContext)) {
    try { audio = new (window.AudioContext || window.webkitAudioContext)(); } catch (error) { audio = null; }
  }
  if (audio && audio.state === "suspended") audio.resume().catch(() => {});
}

// A short tone sequence: "tap" (the card was read), "approved" (rising), "declined" (low).
const TONES = {
  tap: [[1318, 0.07]],
  approved: [[880, 0.11], [1318, 0.16]],
  declined: [[330, 0.18], [220, 0.28]],
};

function sound(kind) {
  if (status.sounds === false) return;
  wakeAudio();
  if (!audio) return;
  let at = Math.max(audio.currentTime + 0.01, nextToneAt);
  for (const [frequency, seconds] of TONES[kind]) {
    const oscillator = audio.createOscillator();
    const gain = audio.createGain();
    oscillator.type = "sine";
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0.25, at);
    gain.gain.exponentialRampToValueAtTime(0.001, at + seconds);
    oscillator.connect(gain).connect(audio.destination);
    oscillator.start(at);
    oscillator.stop(at + seconds);
    at += seconds + 0.03;
  }
  nextToneAt = at;
}

// The approved amount spoken in the terminal's language ("支付宝到账 12.34 元"), when the
// terminal's parameters ask for it (status.announce), with a voice of that language the
// kiosk has; no voice of the language: silence, never the words in a foreign voice.
// Chromium lists the kiosk's voices only after `voiceschanged`: kept as they arrive.
let knownVoices = [];
if (window.speechSynthesis && window.speechSynthesis.addEventListener) {
  window.speechSynthesis.addEventListener("voiceschanged", () => {
    knownVoices = window.speechSynthesis.getVoices();
  });
}

function announce(txn) {
  if (!status.announce || !window.speechSynthesis || txn.kind !== "sale") return;
  const wanted = t("speech_lang");
  const voices = knownVoices.length ? knownVoices : window.speechSynthesis.getVoices();
  const voice = voices.find((v) => v.lang === wanted) ||
    voices.find((v) => v.lang && v.lang.slice(0, 2) === wanted.slice(0, 2));
  if (!voice) return;
  const scheme = String((txn.extra && txn.extra.qr_scheme) || txn.brand || "").toLowerCase();
  const key = Object.prototype.hasOwnProperty.call(strings, "announce_" + scheme)
    ? "announce_" + scheme : "announce_approved";
  const amount = language === "zh" && status.currency_alpha === "CNY"
    ? formatMinor(txn.amount, status.currency_exponent) + t("speech_yuan")
    : txn.amount_text;
  const utterance = new SpeechSynthesisUtterance(t(key, { amount }));
  utterance.lang = voice.lang;
  utterance.voice = voice;
  window.speechSynthesis.speak(utterance);
}

// --- views -------------------------------------------------------------------------------

let idleTimer = null;
let returnTimer = null;

function show(view) {
  // The Sale tab: a running sale's waiting screen (with Cancel); the result of one that
  // ended while the merchant was elsewhere; otherwise the keypad.
  if (view === "sale" && current) {
    if (current.state === "in_progress") view = current.stage === "waiting_for_tip" ? "tip" : "wait";
    else if (resultUnseen) view = "result";
    else current = null;
  }
  if (view === "result") resultUnseen = false;
  for (const section of document.querySelectorAll(".view")) section.classList.add("hidden");
  $("view-" + view).classList.remove("hidden");
  for (const tab of document.querySelectorAll(".tab[data-view]")) {
    tab.classList.toggle("active", tab.dataset.view === view ||
      (tab.dataset.view === "sale" && ["wait", "tip", "result", "receipt", "idle"].includes(view)));
  }
  if (view === "result" && current && current.state !== "in_progress") startAutoReturn();
  else stopAutoReturn();
  if (view === "idle") startIdleClock(); else stopIdleClock();
  if (view === "list") loadList();
  if (view === "totals") loadTotals();
  armIdle();
}

function isShown(view) {
  return !$("view-" + view).classList.contains("hidden");
}

function anyDialogOpen() {
  return Array.from(document.querySelectorAll("dialog")).some((d) => d.open);
}

// The idle screen: the keypad untouched for IDLE_AFTER_MS with nothing typed and no sale.
function armIdle() {
  clearTimeout(idleTimer);
  if (!isShown("sale")) return;
  idleTimer = setTimeout(() => {
    if (isShown("sale") && !digits && !current && !anyDialogOpen()) show("idle");
  }, IDLE_AFTER_MS);
}

let idleClockTimer = null;

function startIdleClock() {
  renderIdleClock();
  clearInterval(idleClockTimer);
  idleClockTimer = setInterval(renderIdleClock, 15000);
}

function stopIdleClock() {
  clearInterval(idleClockTimer);
  idleClockTimer = null;
}

function renderIdleClock() {
  $("idle-clock").textContent = new Intl.DateTimeFormat(locale(),
    { hour: "2-digit", minute: "2-digit" }).format(new Date());
}

function wakeFromIdle() {
  if (isShown("idle")) show("sale");
}

// --- the register's display request: its basket on the idle screen, between sales ------

function renderDisplay() {
  const shown = Boolean(display && display.shown);
  $("view-idle").classList.toggle("with-basket", shown);
  $("basket").classList.toggle("hidden", !shown);
  if (!shown) return;
  $("basket-message").textContent = display.message || "";
  const rows = $("basket-lines");
  rows.textContent = "";
  for (const line of display.lines) {
    const tr = document.createElement("tr");
    tr.appendChild(cell(line.quantity > 1 ? line.quantity + " \u00d7" : "", "qty"));
    tr.appendChild(cell(line.text));
    tr.appendChild(cell(line.amount_text, "num"));
    rows.appendChild(tr);
  }
  $("basket-total-row").classList.toggle("hidden", display.total === null);
  $("basket-total").textContent = display.total_text || "";
  // Between sales only: a running sale's screens, a dialog, an amount being typed, the
  // receipt, the list and the totals stay where the merchant is.
  const running = current && current.state === "in_progress";
  if (!running && !anyDialogOpen() && (isShown("idle") || isShown("result") ||
      (isShown("sale") && !digits))) {
    current = null;
    show("idle");
  }
}

// As the status: a GET's answer that arrives after a display event is older than it.
let displayEvents = 0;

async function refreshDisplay() {
  const before = displayEvents;
  try {
    const fresh = await api("GET", "/api/v1/display");
    if (displayEvents !== before) return;
    display = fresh;
    renderDisplay();
  } catch (error) {
    // The next display event brings it.
  }
}

// --- the tip screen (tip entry on): presets, a typed tip, no tip; then the card ----------

async function renderTip(txn) {
  $("tip-base").textContent = t("tip_base", { amount: txn.amount_text });
  if (tipOffer && tipOffer.id === txn.id) return;
  tipOffer = { id: txn.id, presets: [], custom: false };
  tipDigits = null;
  renderTipEntry();
  $("tip-error").textContent = "";
  $("tip-options").textContent = "";
  try {
    const offered = await api("GET", "/api/v1/transactions/" + txn.id + "/tip");
    if (!tipOffer || tipOffer.id !== txn.id) return;
    tipOffer = offered;
  } catch (error) {
    $("tip-error").textContent = errorText(error);
    return;
  }
  const box = $("tip-options");
  for (const preset of tipOffer.presets) {
    const button = document.createElement("button");
    button.className = "secondary";
    button.dataset.testid = "tip-preset-" + preset.percent;
    button.textContent = t("tip_percent", { percent: preset.percent });
    const adds = document.createElement("span");
    adds.className = "tip-adds";
    adds.textContent = t("tip_adds", { amount: preset.tip_text });
    button.appendChild(adds);
    button.addEventListener("click", () => chooseTip(preset.tip_amount));
    box.appendChild(button);
  }
  if (tipOffer.custom) {
    const custom = document.createElement("button");
    custom.className = "secondary";
    custom.dataset.testid = "tip-custom";
    custom.textContent = t("tip_custom");
    custom.addEventListener("click", () => { tipDigits = ""; renderTipEntry(); });
    box.appendChild(custom);
  }
  const none = document.createElement("button");
  none.className = "secondary";
  none.dataset.testid = "tip-none";
  none.textContent = t("tip_none");
  none.addEventListener("click", () => chooseTip(0));
  box.appendChild(none);
}

function renderTipEntry() {
  const typing = tipDigits !== null;
  $("view-tip").classList.toggle("typing", typing);
  $("tip-keypad").classList.toggle("hidden", !typing);
  $("tip-entry").classList.toggle("hidden", !typing);
  $("tip-custom-ok").classList.toggle("hidden", !typing);
  $("tip-options").classList.toggle("hidden", typing);
  if (!typing || !current) return;
  const minor = tipDigits ? Number.parseInt(tipDigits, 10) : 0;
  $("tip-custom-amount").textContent = formatMinor(minor, status.currency_exponent);
  $("tip-custom-total").textContent = t("tip_total", { amount: amountText(current.amount + minor) });
}

$("tip-keypad").addEventListener("click", (event) => {
  const key = event.target.dataset && event.target.dataset.key;
  if (!key || tipDigits === null) return;
  if (key === "back") tipDigits = tipDigits.slice(0, -1);
  else if ((tipDigits + key).replace(/^0+/, "").length <= 12) tipDigits = (tipDigits + key).replace(/^0+/, "");
  $("tip-error").textContent = "";
  renderTipEntry();
});

$("tip-custom-ok").addEventListener("click", () => {
  chooseTip(tipDigits ? Number.parseInt(tipDigits, 10) : 0);
});

async function chooseTip(minor) {
  if (!current) return;
  $("tip-error").textContent = "";
  try {
    offer(await api("POST", "/api/v1/transactions/" + current.id + "/tip", { tip_amount: minor }), true);
  } catch (error) {
    $("tip-error").textContent = errorText(error);
    resumeSale();
  }
}

$("tip-cancel").addEventListener("click", () => cancelSale());

// A result goes back to the keypad by itself after RESULT_RETURN_MS (a countdown says so).
function startAutoReturn() {
  stopAutoReturn();
  const until = Date.now() + RESULT_RETURN_MS;
  const tick = () => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    $("auto-return").textContent = t("auto_return", { seconds: left });
    if (left > 0) return;
    stopAutoReturn();
    if (isShown("result") && !anyDialogOpen()) {
      current = null;
      show("sale");
    }
  };
  tick();
  returnTimer = setInterval(tick, 1000);
}

function stopAutoReturn() {
  clearInterval(returnTimer);
  returnTimer = null;
  $("auto-return").textContent = "";
}

function renderAmount() {
  const minor = digits ? Number.parseInt(digits, 10) : 0;
  $("amount-display").textContent = formatMinor(minor, status.currency_exponent);
  $("currency-label").textContent = status.currency_alpha;
  renderLimitWarning(minor);
  renderQrOption();
}

// From a brand's contactless limit on its cards cannot pay by tap: Entry Point refuses at the
// Reader Contactless Transaction Limit itself (EMV Contactless Book B v2.10 §3.1.1.6,
// "greater than or equal to"), Kernel 2 only above its own (Book C-2 v2.10 S456.14,
// "greater than"): the status's `refused_from`. The merchant hears it before Charge, not
// from a refusal after.
function renderLimitWarning(minor) {
  const limits = status.contactless_limits || [];
  const refusedFrom = (limit) => (typeof limit.refused_from === "number" ? limit.refused_from : limit.amount + 1);
  const over = limits.filter((limit) => minor >= refusedFrom(limit));
  const box = $("limit-warning");
  if (!minor || over.length === 0) { box.classList.add("hidden"); box.textContent = ""; return; }
  if (over.length === limits.length) {
    const highest = limits.reduce((a, b) => (b.amount > a.amount ? b : a));
    box.textContent = t("limit_warning_all", { amount: highest.text });
  } else {
    box.textContent = t("limit_warning_some", {
      brands: over.map((limit) => limit.brand_text || limit.brand).join(", "),
      amount: over.map((limit) => limit.text).reduce((a, b) => (a === b ? a : a + ", " + b)),
    });
  }
  box.classList.remove("hidden");
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
    banner.title = parts.join(" ");  // the whole text, when the strip is too narrow for it
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
  renderSimulator();
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
  if (mine && !own && txn.state !== "in_progress" &&
      !(isShown("wait") || isShown("tip") || isShown("result"))) {
    // Ended while the merchant was elsewhere: the Sale tab shows its result.
    if (current.state === "in_progress") resultUnseen = true;
    current = txn;
    return true;
  }
  renderTransaction(txn, !again);
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

// `fresh`: a new revision (not the same one in another language): the tones and the voice
// belong to what just happened, once.
const WAITING_STAGES = ["waiting_for_card", "waiting_for_card_again"];

function renderTransaction(txn, fresh) {
  const before = current && current.id === txn.id ? lastStage : null;
  current = txn;
  lastStage = txn.stage;
  if (!txn.state || txn.state === "in_progress") {
    // The card (or code) was taken: one short tone, as a terminal's reader beeps.
    if (fresh && WAITING_STAGES.includes(before) && !WAITING_STAGES.includes(txn.stage)) sound("tap");
    if (txn.stage === "waiting_for_tip") {
      renderTip(txn);
      renderSimulator();
      show("tip");
      return;
    }
    tipOffer = null;
    tipDigits = null;
    $("wait-amount").textContent = txn.amount_text;
    $("wait-tip").classList.toggle("hidden", !txn.tip_amount);
    $("wait-tip").textContent = txn.tip_amount
      ? t("tip_included", { amount: amountText(txn.tip_amount) }) : "";
    // Waiting for a second tap: what the card said ("see phone ...") stays on screen.
    const again = txn.stage === "waiting_for_card_again";
    $("prompt").textContent = again && restartNote && restartNote.id === txn.id
      ? restartNote.message : (txn.prompt || t("prompt"));
    $("cancel").disabled = !txn.cancellable;
    $("spinner").classList.toggle("hidden", Boolean(txn.qr_svg));
    if (txn.stage !== "waiting_for_card") $("scan-note").textContent = "";
    showMerchantCode(txn);
    renderSimulator();
    show("wait");
    return;
  }
  $("mpm").classList.add("hidden");
  $("mpm").textContent = "";
  shownCode = null;
  renderSimulator();
  renderResult(txn);
  show("result");
  if (fresh) {
    // A card read so fast that no event showed it being read still beeps before its result.
    // (Only when something was read: a sale that timed out waiting for a card stays silent.)
    if (WAITING_STAGES.includes(before) && (txn.masked_pan || txn.brand)) sound("tap");
    const ok = txn.state === "approved" || txn.state === "approved_offline";
    if (ok) { sound("approved"); announce(txn); }
    else if (txn.state !== "cancelled") sound("declined");
  }
}

// The outcome says what happened: the terminal's title for it (a refund is "Refunded", a
// card that wants another method is not "Declined"), else one from the state.
function renderResult(txn) {
  const ok = txn.state === "approved" || txn.state === "approved_offline";
  const neutral = txn.state === "cancelled";
  const fallback = ok
    ? t(txn.state === "approved_offline" ? "result_approved_offline" : "result_approved")
    : t(txn.state === "cancelled" ? "result_cancelled" : "result_declined");
  const tone = ok ? "ok" : (neutral ? "neutral" : "bad");
  $("result-icon").textContent = ok ? "\u2714" : (neutral ? "\u2013" : "\u2716");
  $("result-icon").className = "result-icon " + tone;
  $("result-title").textContent = txn.title || fallback;
  $("result-title").className = "result-title " + tone;
  const merchant = txn.message ? txn.message.merchant : "";
  const customer = txn.message ? txn.message.customer : "";
  $("result-merchant").textContent = merchant;
  // The customer's line only when it says something the merchant's does not.
  $("result-customer").textContent = customer && customer !== merchant ? customer : "";
  $("show-receipt").classList.toggle("hidden", txn.state === "cancelled");
  // Try again: a sale that did not go through, with the same amount, in one tap.
  $("try-again").classList.toggle("hidden", ok || txn.kind !== "sale");
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

function keyAmount(key) {
  if (key === "C") digits = "";
  else if (key === "back") digits = digits.slice(0, -1);
  else if ((digits + key).replace(/^0+/, "").length <= 12) digits = (digits + key).replace(/^0+/, "");
  $("sale-error").textContent = "";
  renderAmount();
}

for (const pad of [$("keypad"), $("clear-amount")]) {
  pad.addEventListener("click", (event) => {
    const key = event.target.dataset && event.target.dataset.key;
    if (key) keyAmount(key);
  });
}

// A Charge the terminal refused. "Busy" means a sale is already running (started by the
// register, or before a reload): show that sale, with its Cancel, instead of a dead end.
function saleRefused(error) {
  if (error.status === 409) resumeSale();
  $("sale-error").textContent = errorText(error);
}

async function startSale(minor, method) {
  $("sale-error").textContent = "";
  $("scan-note").textContent = "";
  if (minor <= 0) { $("sale-error").textContent = t("error_no_amount"); return; }
  const body = { amount: minor, currency: status.currency };
  if (method) body.method = method;
  try {
    const txn = await api("POST", "/api/v1/sales", body);
    digits = "";
    renderAmount();
    offer(txn, true);
  } catch (error) {
    if (!isShown("sale")) show("sale");
    saleRefused(error);
  }
}

function typedAmount() {
  return digits ? Number.parseInt(digits, 10) : 0;
}

$("charge").addEventListener("click", () => startSale(typedAmount(), null));
$("charge-qr").addEventListener("click", () => startSale(typedAmount(), "merchant_qr"));

$("try-again").addEventListener("click", () => {
  if (!current) return;
  const method = current.method === "merchant_qr" ? "merchant_qr" : null;
  const amount = current.amount;
  current = null;
  startSale(amount, method);
});

async function cancelSale() {
  if (!current) return;
  try { offer(await api("POST", "/api/v1/transactions/" + current.id + "/cancel"), true); }
  catch (error) {
    $(isShown("tip") ? "tip-error" : "prompt").textContent = errorText(error);
    resumeSale();  // too late, or already over: show how it stands now
  }
}

$("cancel").addEventListener("click", () => cancelSale());

$("new-sale").addEventListener("click", () => {
  current = null;  // the merchant has left that sale: the Sale tab is the keypad again
  $("sale-error").textContent = "";
  show("sale");
});

// A physical keypad or keyboard: digits, Backspace, Escape (clear), Enter (Charge) on the
// keypad screen; the dialogs take their own keys.
document.addEventListener("keydown", (event) => {
  wakeAudio();
  if (isShown("idle")) { wakeFromIdle(); event.preventDefault(); return; }
  if (anyDialogOpen() || event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
  if (!isShown("sale")) {
    if (event.key === "Enter" && isShown("result")) { $("new-sale").click(); event.preventDefault(); }
    return;
  }
  if (/^[0-9]$/.test(event.key)) keyAmount(event.key);
  else if (event.key === "Backspace") keyAmount("back");
  else if (event.key === "Escape" || event.key === "Delete") keyAmount("C");
  else if (event.key === "Enter") $("charge").click();
  else return;
  event.preventDefault();
  armIdle();
});

document.addEventListener("pointerdown", () => {
  wakeAudio();
  armIdle();
}, true);
$("view-idle").addEventListener("click", wakeFromIdle);

// --- the simulator drawer (demo terminals only) ------------------------------------------

function renderSimulator() {
  const on = SIMULATOR || SIM_PHONE;
  $("sim-toggle").classList.toggle("hidden", !on);
  if (!on) return;
  const running = current && current.state === "in_progress" ? current : null;
  const stage = running ? running.stage : "";
  const cardWanted = stage === "waiting_for_card" || stage === "waiting_for_card_again";
  $("sim-cards").classList.toggle("hidden", !SIMULATOR);
  for (const button of document.querySelectorAll("#sim-cards button")) button.disabled = !cardWanted;
  $("sim-cards-note").classList.toggle("hidden", cardWanted);
  $("sim-phone").classList.toggle("hidden", !SIM_PHONE || stage !== "waiting_for_card");
  $("sim-mpm").classList.toggle("hidden", !SIM_PHONE || !(running && running.qr_svg));
  const acquirer = (status.simulator || {}).acquirer;
  $("sim-acquirer").classList.toggle("hidden", !acquirer);
  for (const button of document.querySelectorAll("#sim-acquirer button")) {
    button.setAttribute("aria-pressed", String(button.dataset.acquirer === acquirer));
  }
  // While a sale waits for the simulated customer, the drawer's tab says so.
  $("sim-toggle").classList.toggle("attention", Boolean(cardWanted || (running && running.qr_svg)));
}

function openDrawer(open) {
  $("sim-drawer").classList.toggle("hidden", !open);
  $("sim-toggle").setAttribute("aria-expanded", String(open));
}

$("sim-toggle").addEventListener("click", () => openDrawer($("sim-drawer").classList.contains("hidden")));

$("sim-cards").addEventListener("click", async (event) => {
  const card = event.target.dataset && event.target.dataset.card;
  if (!card) return;
  openDrawer(false);  // the customer has tapped: the merchant watches the sale
  try { await api("POST", "/api/v1/simulator/present", { card }); }
  catch (error) { $("prompt").textContent = errorText(error); }
});

$("sim-phone").addEventListener("click", async (event) => {
  const code = event.target.dataset && event.target.dataset.phone;
  if (!code) return;
  openDrawer(false);
  try { await api("POST", "/api/v1/simulator/phone", { code }); }
  catch (error) { $("scan-note").textContent = errorText(error); }
});

$("sim-pay-mpm").addEventListener("click", async () => {
  if (!current) return;
  openDrawer(false);
  try { await api("POST", "/api/v1/simulator/pay-merchant-qr", { transaction_id: current.id }); }
  catch (error) { $("scan-note").textContent = errorText(error); }
});

$("sim-acquirer").addEventListener("click", async (event) => {
  const mode = event.target.dataset && event.target.dataset.acquirer;
  if (!mode) return;
  try {
    const answer = await api("POST", "/api/v1/simulator/acquirer", { mode });
    status.simulator = Object.assign({}, status.simulator, { acquirer: answer.acquirer });
    $("sim-acquirer-note").textContent = t("sim_acquirer_" + answer.acquirer + "_note");
    renderSimulator();
  } catch (error) {
    $("sim-acquirer-note").textContent = errorText(error);
  }
});

// --- dialogs -----------------------------------------------------------------------------

// An in-page notice (no printer, a failed print): the kiosk has no native alert to show.
function notice(text) {
  $("notice-text").textContent = text;
  if (!$("notice-dialog").open) $("notice-dialog").showModal();
}

// The on-screen keypad of a dialog types into its active field: digits, the locale's decimal
// separator (amount fields only), delete.
function dialogKeypad(pad, activeField, onChange) {
  pad.addEventListener("click", (event) => {
    const key = event.target.dataset && event.target.dataset.key;
    const field = activeField();
    if (!key || !field) return;
    if (key === "back") field.value = field.value.slice(0, -1);
    else if (key === "sep") { if (field.dataset.decimal === "true") field.value += DECIMAL; }
    else if (field.value.length < Number(field.dataset.max || 16)) field.value += key;
    if (onChange) onChange(field);
  });
}

let activePinField = null;

function focusPinField(field) {
  activePinField = field;
  for (const input of document.querySelectorAll("#pin-dialog .fields input")) {
    input.classList.toggle("active", input === field);
  }
  $("dialog-sep").disabled = field.dataset.decimal !== "true";
}

for (const input of document.querySelectorAll("#pin-dialog .fields input")) {
  input.addEventListener("pointerdown", () => focusPinField(input));
  input.addEventListener("focus", () => focusPinField(input));
}
$("refund-amount").dataset.decimal = "true";
$("refund-amount").dataset.max = "15";
$("pin-input").dataset.max = "12";
$("dialog-sep").textContent = DECIMAL;
$("search-sep").textContent = DECIMAL;
dialogKeypad($("dialog-keypad"), () => activePinField, () => { $("pin-error").textContent = ""; });

// "Refund 12.34 EUR, Visa ••0010, 17:55": what the merchant recognises, never an id.
function pinTitle(action, txn) {
  if (action === "end_of_day") return t("eod_confirm_title");
  const card = [txn.brand_text || txn.brand || "", txn.masked_pan ? "\u2022\u2022" + txn.masked_pan.slice(-4) : ""]
    .filter(Boolean).join(" ");
  const what = [txn.amount_text, card, whenText(txn.created_at, false)].filter(Boolean).join(", ");
  return t(action === "void" ? "void_title" : "refund_title", { what, id: txn.id });
}

// The merchant PIN dialog: a refund (amount and PIN), a void (PIN) or the end of day (the
// totals to be closed, then the PIN).
function openPin(action, txn) {
  pinAction = action;
  pinTarget = txn;
  $("pin-title").textContent = pinTitle(action, txn);
  $("refund-amount-row").classList.toggle("hidden", action !== "refund");
  $("eod-confirm").classList.toggle("hidden", action !== "end_of_day");
  $("pin-ok").textContent = t(action === "refund" ? "refund" : (action === "void" ? "void" : "eod_close"));
  $("pin-input").value = "";
  $("pin-error").textContent = "";
  if (action === "refund") {
    $("refund-amount").value = formatMinor(txn.refundable_amount, status.currency_exponent)
      .replace(".", DECIMAL);
  }
  $("pin-dialog").showModal();
  focusPinField(action === "refund" ? $("refund-amount") : $("pin-input"));
}

async function refundWithPin() {
  const amount = parseMajor($("refund-amount").value, status.currency_exponent);
  if (amount === null || amount <= 0) { $("pin-error").textContent = t("error_bad_amount"); return; }
  if (amount > pinTarget.refundable_amount) {
    $("pin-error").textContent = t("error_refund_too_much",
      { amount: amountText(pinTarget.refundable_amount) });
    return;
  }
  const txn = await whileSending(() => api("POST", "/api/v1/transactions/" + pinTarget.id +
    "/refund", { pin: $("pin-input").value, amount }));
  $("pin-dialog").close();
  offer(txn, true);
}

// The dialog's OK stays disabled while its request runs: a second tap never sends a second
// refund or void.
async function whileSending(request) {
  const ok = $("pin-ok");
  ok.disabled = true;
  try {
    return await request();
  } finally {
    ok.disabled = false;
  }
}

async function voidWithPin() {
  const txn = await whileSending(() => api("POST", "/api/v1/transactions/" + pinTarget.id +
    "/void", { pin: $("pin-input").value }));
  $("pin-dialog").close();
  offer(txn, true);
}

async function endOfDayWithPin() {
  $("pin-error").textContent = t("eod_closing");
  const report = await whileSending(() => api("POST", "/api/v1/end-of-day",
    { pin: $("pin-input").value }));
  $("pin-dialog").close();
  showReport(report);
}

$("pin-ok").addEventListener("click", async (event) => {
  event.preventDefault();
  if ($("pin-ok").disabled) return;
  try {
    if (pinAction === "refund") await refundWithPin();
    else if (pinAction === "void") await voidWithPin();
    else if (pinAction === "end_of_day") await endOfDayWithPin();
  } catch (error) {
    $("pin-error").textContent = errorText(error);
  }
});
$("pin-cancel").addEventListener("click", (event) => { event.preventDefault(); $("pin-dialog").close(); });
$("pin-dialog").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); $("pin-ok").click(); }
});

// --- receipts ----------------------------------------------------------------------------

async function loadReceipt() {
  const html = await api("GET", "/api/v1/transactions/" + receiptTxn.id +
    "/receipt?format=html&copy=" + receiptCopy);
  $("receipt").innerHTML = html;  // rendered by the terminal from its own journal, escaped there
  for (const button of document.querySelectorAll(".copy-btn")) {
    button.setAttribute("aria-pressed", String(button.dataset.copy === receiptCopy));
  }
}

async function openReceipt(txn, from) {
  receiptTxn = txn;
  receiptFrom = from;
  receiptCopy = "customer";
  try {
    await loadReceipt();
    show("receipt");
  } catch (error) {
    notice(errorText(error));
  }
}

$("show-receipt").addEventListener("click", () => openReceipt(current, "result"));
for (const button of document.querySelectorAll(".copy-btn")) {
  button.addEventListener("click", async () => { receiptCopy = button.dataset.copy; await loadReceipt(); });
}
$("print-receipt").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/transactions/" + receiptTxn.id + "/print", { copies: [receiptCopy] }); }
  catch (error) { notice(errorText(error)); }
});
$("receipt-back").addEventListener("click", () => show(receiptFrom));

// --- transactions, refunds, voids ----------------------------------------------------------

let attentionOnly = false;  // the list's "needs attention" filter
let pageCursors = [null];   // the `before` cursor of each page shown so far (first: newest)
let listQuery = "";         // what the merchant searched for

function listUrl() {
  const params = new URLSearchParams();
  const box = $("list-scroll");
  const rows = Math.max(4, Math.floor((box.clientHeight - LIST_ROW_PX) / LIST_ROW_PX));
  params.set("limit", String(rows));
  if (attentionOnly) params.set("attention", "1");
  if (listQuery) params.set("q", listQuery);
  const range = dateRange($("date-filter").value);
  if (range) { params.set("date_from", range[0]); params.set("date_to", range[1]); }
  const before = pageCursors[pageCursors.length - 1];
  if (before !== null) params.set("before", String(before));
  return "/api/v1/transactions?" + params.toString();
}

function dateRange(choice) {
  const today = new Date();
  const day = (offset) => { const d = new Date(today); d.setDate(d.getDate() + offset); return isoDate(d); };
  if (choice === "today") return [day(0), day(0)];
  if (choice === "yesterday") return [day(-1), day(-1)];
  if (choice === "week") return [day(-6), day(0)];
  return null;
}

function cardText(txn) {
  const brand = txn.brand_text || txn.brand || "";
  const last4 = txn.masked_pan ? "\u2022\u2022" + txn.masked_pan.slice(-4) : "";
  return [brand, last4].filter(Boolean).join(" ");
}

// The status cell: the state, what refunds and voids did to a sale, where an offline sale is.
function statusCell(txn, tr) {
  const td = document.createElement("td");
  // Declined by the bank after the fact: no money came in, whatever the counter showed.
  const shown = txn.offline_status === "declined" ? "declined" : (txn.refund_state || txn.state);
  td.className = "state-" + shown;
  td.textContent = t("state_" + shown, null, shown.replace(/_/g, " "));
  if (txn.offline_status) {
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
  return td;
}

function typeCell(txn) {
  const td = document.createElement("td");
  td.textContent = t("kind_" + txn.kind, null, txn.kind);
  const original = txn.original;
  if (original) {
    // A refund or void says which sale it belongs to.
    const link = document.createElement("span");
    link.className = "linked";
    link.dataset.testid = "refund-of";
    link.textContent = t("refund_of", { amount: original.amount_text, when: whenText(original.created_at, true) });
    td.appendChild(link);
  }
  return td;
}

function actionButton(label, className, onClick) {
  const button = document.createElement("button");
  button.className = "secondary " + className;
  button.textContent = label;
  button.addEventListener("click", onClick);
  return button;
}

let listRequest = 0;  // the newest list request: an older answer arriving late is dropped

async function loadList() {
  const mine = ++listRequest;
  let data;
  try {
    data = await api("GET", listUrl());
  } catch (error) {
    if (mine === listRequest) $("sync-result").textContent = errorText(error);
    return;
  }
  if (mine !== listRequest) return;
  const rows = $("txn-rows");
  rows.textContent = "";
  for (const txn of data.transactions) {
    const tr = document.createElement("tr");
    tr.dataset.id = txn.id;
    const when = document.createElement("td");
    when.className = "when";
    when.textContent = whenText(txn.created_at, true);
    tr.appendChild(when);
    tr.appendChild(typeCell(txn));
    const amount = document.createElement("td");
    amount.className = "num";
    amount.textContent = (txn.kind === "refund" ? "-" : "") + txn.amount_text;
    tr.appendChild(amount);
    const card = document.createElement("td");
    card.textContent = cardText(txn);
    tr.appendChild(card);
    tr.appendChild(statusCell(txn, tr));
    const actions = document.createElement("td");
    actions.className = "actions";
    if (txn.refundable_amount > 0) {
      actions.appendChild(actionButton(t("refund"), "refund-btn", () => openPin("refund", txn)));
    } else if (txn.refundable_after_sync) {
      // An offline sale still waiting to be sent: the bank must have it before a refund.
      const note = document.createElement("span");
      note.className = "linked";
      note.dataset.testid = "refund-after-sync";
      note.textContent = t("refund_after_sync");
      actions.appendChild(note);
    }
    if (txn.voidable) {
      actions.appendChild(actionButton(t("void"), "void-btn", () => openPin("void", txn)));
    }
    if (txn.state !== "in_progress" && txn.state !== "cancelled") {
      actions.appendChild(actionButton(t("receipt"), "receipt-btn", () => openReceipt(txn, "list")));
    }
    tr.appendChild(actions);
    rows.appendChild(tr);
  }
  $("list-empty").classList.toggle("hidden", data.transactions.length > 0);
  const page = pageCursors.length;
  $("page-label").textContent = t("page_number", { page });
  $("page-newer").disabled = page <= 1;
  $("page-older").disabled = !data.next;
  $("page-older").dataset.next = data.next === null || data.next === undefined ? "" : String(data.next);
}

function reloadListFromStart() {
  pageCursors = [null];
  loadList();
}

$("page-older").addEventListener("click", () => {
  const next = $("page-older").dataset.next;
  if (!next) return;
  pageCursors.push(next);
  loadList();
});
$("page-newer").addEventListener("click", () => {
  if (pageCursors.length > 1) pageCursors.pop();
  loadList();
});
$("date-filter").addEventListener("change", reloadListFromStart);
$("attention-filter").addEventListener("click", () => {
  attentionOnly = !attentionOnly;
  $("attention-filter").setAttribute("aria-pressed", String(attentionOnly));
  reloadListFromStart();
});

// Search: the on-screen keypad (amount or last 4 digits) or a keyboard (also a reference).
function openSearch() {
  $("search-entry").value = $("search").value;
  $("search-entry").dataset.decimal = "true";
  $("search-entry").dataset.max = "64";
  $("search-dialog").showModal();
}
$("search").addEventListener("pointerdown", (event) => { event.preventDefault(); openSearch(); });
$("search").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { listQuery = $("search").value.trim(); reloadListFromStart(); }
});
dialogKeypad($("search-keypad"), () => $("search-entry"));
$("search-ok").addEventListener("click", (event) => {
  event.preventDefault();
  $("search").value = $("search-entry").value.trim();
  listQuery = $("search").value;
  $("search-dialog").close();
  reloadListFromStart();
});
$("search-cancel").addEventListener("click", (event) => {
  event.preventDefault();
  $("search-dialog").close();
});
$("search-clear").addEventListener("click", (event) => {
  event.preventDefault();
  $("search").value = "";
  listQuery = "";
  $("search-dialog").close();
  reloadListFromStart();
});
$("search-dialog").addEventListener("keydown", (event) => {
  if (event.key === "Enter") { event.preventDefault(); $("search-ok").click(); }
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

// --- totals and end of day -----------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function headRow(labels) {
  const tr = document.createElement("tr");
  labels.forEach((label, index) => {
    const th = document.createElement("th");
    th.textContent = label;
    if (index > 0) th.className = "num";
    tr.appendChild(th);
  });
  return tr;
}

function countAmount(count, text) {
  return t("count_amount", { count, amount: text });
}

// The open batch: approved sales and refunds per payment method, then the grand total.
function renderOpenTotals(data) {
  $("totals-head").replaceChildren(headRow([t("col_method"), t("col_sales"), t("col_refunds"), t("col_net")]));
  const rows = $("totals-rows");
  rows.textContent = "";
  for (const line of data.lines || []) {
    const tr = document.createElement("tr");
    tr.append(cell(line.brand_text || line.brand),
      cell(countAmount(line.sales_count, line.sales_amount_text), "num"),
      cell(countAmount(line.refunds_count, line.refunds_amount_text), "num"),
      cell(line.net_amount_text, "num"));
    rows.appendChild(tr);
  }
  for (const total of data.grand_totals || []) {
    const tr = document.createElement("tr");
    tr.className = "grand";
    tr.dataset.testid = "grand-total";
    tr.append(cell(t("grand_total")),
      cell(countAmount(total.sales_count, total.sales_amount_text), "num"),
      cell(countAmount(total.refunds_count, total.refunds_amount_text), "num"),
      cell(total.net_amount_text, "num"));
    rows.appendChild(tr);
  }
  if (!(data.lines || []).length) {
    const tr = document.createElement("tr");
    tr.append(cell(t("totals_empty")));
    rows.appendChild(tr);
  }
  const offline = data.offline || {};
  $("eod-result").textContent = offline.count
    ? t("totals_offline_waiting", { count: offline.count, amount: offline.amount_text }) : "";
}

// One side of a report line (the terminal's or the bank's): sales, refunds and net, each
// with its count, one per line; "not counted" when that side has no such line.
function sideCell(side) {
  const td = document.createElement("td");
  td.className = "num side";
  if (!side) { td.textContent = t("report_no_line"); return td; }
  for (const [label, text] of [
    [t("col_sales"), countAmount(side.sales_count, side.sales_amount_text)],
    [t("col_refunds"), countAmount(side.refunds_count, side.refunds_amount_text)],
    [t("col_net"), side.net_amount_text],
  ]) {
    const line = document.createElement("span");
    line.className = "side-line";
    line.textContent = label + " " + text;
    td.appendChild(line);
  }
  return td;
}

// A closed batch: terminal and bank side by side, differences flagged. A batch an earlier
// version closed kept the bank's totals only: those, said so.
function showReport(report) {
  shownReport = report;
  $("batch-list").classList.add("hidden");
  $("totals-table").classList.remove("hidden");
  $("totals-heading").textContent = t("batch_heading", { batch: report.batch_id, when: whenText(report.closed_at, true) });
  $("eod-print").classList.remove("hidden");
  $("end-of-day").classList.add("hidden");
  $("totals-head").replaceChildren(headRow([t("col_method"), t("col_terminal"), t("col_bank"), ""]));
  const rows = $("totals-rows");
  rows.textContent = "";
  const legacy = Boolean(report.legacy);
  const lines = legacy ? (report.host_lines || []).map((host) => ({ ...host, host, legacy: true }))
    : (report.lines || []);
  for (const line of lines) {
    const tr = document.createElement("tr");
    tr.dataset.testid = "report-line";
    tr.append(cell(line.brand_text || line.brand), legacy ? cell("-", "num") : sideCell(line),
      sideCell(line.host),
      cell(line.differs ? t("report_differs") : (legacy ? "" : "\u2713"),
        line.differs ? "differs" : "num"));
    rows.appendChild(tr);
  }
  const theirs = report.host_grand_totals || [];
  const currencies = new Set([...(report.grand_totals || []), ...theirs].map((total) => total.currency));
  for (const currency of currencies) {
    const mine = (report.grand_totals || []).find((total) => total.currency === currency);
    const host = theirs.find((total) => total.currency === currency);
    const tr = document.createElement("tr");
    tr.className = "grand";
    tr.append(cell(t("grand_total")), legacy ? cell("-", "num") : sideCell(mine), sideCell(host), cell(""));
    rows.appendChild(tr);
  }
  const result = $("eod-result");
  result.textContent = "";
  const balance = document.createElement("div");
  balance.dataset.testid = "eod-balance";
  if (legacy) {
    balance.textContent = t("report_legacy_note");
  } else {
    balance.className = report.in_balance ? "balance-ok" : "balance-bad";
    balance.textContent = report.in_balance
      ? t("report_in_balance", { count: report.transactions })
      : t("report_out_of_balance", { count: report.differences });
  }
  result.appendChild(balance);
  const still = report.still_offline || {};
  if (still.count) {
    const line = document.createElement("div");
    line.textContent = t("report_still_offline", { count: still.count });
    result.appendChild(line);
  }
}

async function loadTotals() {
  shownReport = null;
  $("batch-list").classList.add("hidden");
  $("totals-table").classList.remove("hidden");
  $("totals-heading").textContent = t("totals_open");
  $("eod-print").classList.add("hidden");
  $("end-of-day").classList.remove("hidden");
  try {
    renderOpenTotals(await api("GET", "/api/v1/totals"));
  } catch (error) {
    $("eod-result").textContent = errorText(error);
  }
}

// Closing the batch: the totals to be closed first, then the merchant PIN, as a refund.
$("end-of-day").addEventListener("click", async () => {
  let data;
  try { data = await api("GET", "/api/v1/totals"); }
  catch (error) { notice(errorText(error)); return; }
  const box = $("eod-confirm");
  box.textContent = "";
  const table = document.createElement("table");
  for (const total of data.grand_totals || []) {
    const tr = document.createElement("tr");
    tr.append(cell(t("col_sales")), cell(countAmount(total.sales_count, total.sales_amount_text), "num"));
    const refunds = document.createElement("tr");
    refunds.append(cell(t("col_refunds")), cell(countAmount(total.refunds_count, total.refunds_amount_text), "num"));
    const net = document.createElement("tr");
    net.append(cell(t("col_net")), cell(total.net_amount_text, "num"));
    table.append(tr, refunds, net);
  }
  const explain = document.createElement("div");
  explain.className = "dialog-hint";
  const offline = data.offline || {};
  explain.textContent = offline.count
    ? t("eod_confirm_offline", { count: offline.count }) : t("eod_confirm_hint");
  box.append(table, explain);
  openPin("end_of_day", null);
});

$("eod-print").addEventListener("click", async () => {
  if (!shownReport) return;
  try { await api("POST", "/api/v1/batches/" + encodeURIComponent(shownReport.batch_id) + "/print"); }
  catch (error) { notice(errorText(error)); }
});

// Earlier batches: newest first, a page at a time ("Older batches" below the last one); one
// tap shows that batch's report as it was closed.
async function loadBatches(before) {
  let data;
  const query = "/api/v1/batches?limit=20" + (before ? "&before=" + encodeURIComponent(before) : "");
  try { data = await api("GET", query); }
  catch (error) { notice(errorText(error)); return; }
  const list = $("batch-list");
  if (!before) list.textContent = "";
  const more = list.querySelector(".more-batches");
  if (more) more.remove();
  for (const report of data.batches) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    const totals = report.legacy ? report.host_grand_totals : report.grand_totals;
    const net = (totals || []).map((total) => total.net_amount_text).join(", ");
    button.textContent = t("batch_row", { batch: report.batch_id, when: whenText(report.closed_at, true),
      net: net || "-" }) + (report.in_balance === false ? " \u26a0" : "");
    button.addEventListener("click", () => showReport(report));
    li.appendChild(button);
    list.appendChild(li);
  }
  if (!before && !data.batches.length) {
    const li = document.createElement("li");
    li.textContent = t("batches_empty");
    list.appendChild(li);
  }
  if (data.next !== null && data.next !== undefined) {
    const li = document.createElement("li");
    li.className = "more-batches";
    const button = document.createElement("button");
    button.dataset.testid = "older-batches";
    button.textContent = t("batches_older");
    button.addEventListener("click", () => loadBatches(String(data.next)));
    li.appendChild(button);
    list.appendChild(li);
  }
}

$("batch-history").addEventListener("click", async () => {
  await loadBatches(null);
  $("totals-table").classList.add("hidden");
  $("eod-result").textContent = "";
  $("totals-heading").textContent = t("batch_history");
  $("eod-print").classList.add("hidden");
  $("end-of-day").classList.add("hidden");
  $("batch-list").classList.remove("hidden");
});

for (const tab of document.querySelectorAll(".tab[data-view]")) {
  tab.addEventListener("click", () => {
    show(tab.dataset.view);
    if (tab.dataset.view === "sale") resumeSale();
  });
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) resumeSale(); });

// --- live updates --------------------------------------------------------------------------

// Status comes by the event stream (in the order the terminal published it) and by GETs of
// the page's own. A GET's answer that arrives after a status event is dropped: that event
// was published when the GET was already on its way, so it is at least as new.
let statusEvents = 0;

async function refreshStatus() {
  const before = statusEvents;
  const fresh = await api("GET", "/api/v1/status");
  if (statusEvents === before) status = fresh;
  await setLanguage(status.language || "en");
  renderBanner();
  renderAmount();
}

function connect() {
  // Same origin: the browser sends the page's session cookie with the stream's request.
  const source = new EventSource("/api/v1/events");
  source.addEventListener("status", (event) => {
    statusEvents += 1;
    status = JSON.parse(event.data);
    renderBanner();
    renderAmount();
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
  // The register's display request (or its clearing, also by a sale starting).
  source.addEventListener("display", (event) => {
    displayEvents += 1;
    display = JSON.parse(event.data);
    renderDisplay();
  });
  source.addEventListener("scan_rejected", (event) => {
    const note = JSON.parse(event.data);
    if (current && note.id === current.id) $("scan-note").textContent = note.message || note.reason;
  });
  source.onopen = () => {
    document.body.dataset.live = "true";
    // Connected first, asked second: whatever changes from here on also comes as an event.
    resumeSale();
    refreshDisplay();
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

renderSimulator();
armIdle();
refreshStatus().then(connect);
