// cashflow web: progressive enhancement only. Every form works without this file.
// - amount fields fill the decimal from the right, like a card machine's keypad;
// - the record form is sent in the background, so the live balance is watched without a reload;
// - the "today" panel listens to server-sent events and refetches itself on each change,
//   reconnecting with backoff after errors (the browser resumes with Last-Event-ID).
(() => {
  'use strict';

  // Digits typed are cents: "1" -> 0,01, "12" -> 0,12, "123456" -> 1.234,56.
  const keypad = (input) => {
    const places = Number(input.dataset.keypad || 2);
    const group = input.dataset.group || '.';
    const decimal = input.dataset.decimal || ',';
    const digits = input.value.replace(/\D/g, '').replace(/^0+/, '').slice(0, 15);
    if (!digits) { input.value = ''; return; }
    const padded = digits.padStart(places + 1, '0');
    const whole = padded.slice(0, padded.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, group);
    input.value = places ? whole + decimal + padded.slice(-places) : whole;
  };
  document.addEventListener('input', (e) => {
    if (e.target instanceof HTMLInputElement && e.target.dataset.keypad !== undefined) keypad(e.target);
  });

  const parse = (html) => new DOMParser().parseFromString(html, 'text/html');
  const swap = (doc, id) => {
    const fresh = doc.getElementById(id);
    const old = document.getElementById(id);
    if (fresh && old) old.replaceWith(document.importNode(fresh, true));
    return Boolean(fresh && old);
  };

  // The record form, sent with fetch; the server's answer (the page after the redirect, or the
  // form with the API's errors) replaces the form and the notices.
  document.addEventListener('submit', async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || form.id !== 'record' || !window.fetch) return;
    e.preventDefault();
    const body = new URLSearchParams(new FormData(form, e.submitter || undefined));
    form.setAttribute('aria-busy', 'true');
    try {
      const response = await fetch(form.action, { method: 'POST', body, credentials: 'same-origin' });
      if (new URL(response.url).pathname === '/signin') { location.href = response.url; return; }
      const doc = parse(await response.text());
      const replaced = swap(doc, 'record');
      swap(doc, 'flash');
      if (!replaced) { form.submit(); return; }
      const next = document.getElementById('record');
      const focus = next && (next.querySelector('[aria-invalid=true]') || next.querySelector('#amount'));
      if (focus) focus.focus();
    } catch (_) {
      form.submit();
    } finally {
      form.removeAttribute('aria-busy');
    }
  });

  // Live "today" panel.
  const live = document.querySelector('[data-live]');
  if (live && window.EventSource) {
    let lastId = '';
    let delay = 1000;
    let source = null;
    const refresh = async () => {
      const response = await fetch(live.dataset.live, { credentials: 'same-origin' });
      if (response.status === 401) { location.href = '/signin?expired=1'; return; }
      if (!response.ok) return;
      const panel = document.querySelector('[data-live]');
      const fresh = parse(await response.text()).getElementById(panel.id);
      if (fresh) panel.innerHTML = fresh.innerHTML;
      panel.dataset.refreshed = String(Date.now());
    };
    const connect = () => {
      source = new EventSource(lastId ? '/events?last_id=' + encodeURIComponent(lastId) : '/events');
      source.onopen = () => { delay = 1000; live.dataset.state = 'live'; };
      source.addEventListener('balance', (event) => {
        lastId = event.lastEventId || lastId;
        refresh().catch(() => {});
      });
      source.onerror = () => {
        live.dataset.state = 'offline';
        if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
        source.close();
        refresh().catch(() => {});
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      };
    };
    connect();
  }
})();
