// cashflow web: progressive enhancement only. Every form works without this file.
// - amount fields fill the decimal from the right, like a card machine's keypad;
// - the record form is sent in the background, so the live balance is watched without a reload;
// - the "today" panel listens to server-sent events and refetches itself on each change,
//   reconnecting with backoff after errors (the browser resumes with Last-Event-ID);
// - offline, the record form keeps entries in an IndexedDB queue on the device, each with an
//   Idempotency-Key made here, shows them as pending with a provisional balance, and sends them
//   when back online: one tab at a time (Web Locks), and a replay returns the entry already
//   recorded (the API's idempotency key), so nothing is recorded twice;
// - the service worker (/sw.js) keeps the app shell for opening the app offline.
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

  // The live panel's refresh, once there is one (sending the queue changes the balance).
  let refreshPanel = async () => {};

  // ---- Offline queue ----
  const outbox = (() => {
    const box = () => document.getElementById('outbox');
    const open = () => new Promise((resolve, reject) => {
      const request = indexedDB.open('cashflow', 1);
      request.onupgradeneeded = () => request.result.createObjectStore('outbox', { keyPath: 'key' });
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    const store = async (mode, use) => {
      const db = await open();
      return new Promise((resolve, reject) => {
        const tx = db.transaction('outbox', mode);
        const request = use(tx.objectStore('outbox'));
        tx.oncomplete = () => { db.close(); resolve(request.result); };
        tx.onerror = () => { db.close(); reject(tx.error); };
      });
    };
    const channel = window.BroadcastChannel ? new BroadcastChannel('cashflow-outbox') : null;
    const changed = () => { if (channel) channel.postMessage('changed'); };
    const mine = async () => {
      const owner = box()?.dataset.owner;
      const all = await store('readonly', (s) => s.getAll());
      return all.filter((item) => item.owner === owner).sort((a, b) => a.created - b.created);
    };
    // Amounts as the page shows them ("1.234,56", "R$ -0,50"): two decimal places, so cents.
    const cents = (text) => {
      const digits = Number(String(text).replace(/\D/g, '') || 0);
      return /^[^\d]*[-−]/.test(String(text)) ? -digits : digits;
    };
    const money = (minor, like) => {
      const amount = document.getElementById('amount');
      const group = amount?.dataset.group || '.';
      const decimal = amount?.dataset.decimal || ',';
      const prefix = (String(like).replace(/[-−]/, '').match(/^[^\d]*/) || [''])[0];
      const abs = Math.abs(minor);
      const whole = String(Math.trunc(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, group);
      return `${minor < 0 ? '-' : ''}${prefix}${whole}${decimal}${String(abs % 100).padStart(2, '0')}`;
    };
    const expired = (yes) => {
      const note = document.getElementById('outbox-expired');
      if (note) note.hidden = !yes;
    };
    const render = async () => {
      const section = box();
      if (!section) return;
      const items = await mine();
      const list = document.getElementById('outbox-items');
      list.replaceChildren(...items.map((item) => {
        const li = document.createElement('li');
        li.dataset.key = item.key;
        li.textContent = `${item.fields.type === 'debit' ? '−' : '+'} ${item.fields.amount} · ${item.fields.description}`;
        return li;
      }));
      section.hidden = items.length === 0 && document.getElementById('outbox-expired').hidden;
      const closing = document.getElementById('closing-balance');
      const provisional = document.getElementById('provisional');
      if (closing && items.length) {
        const total = items.reduce((sum, i) => sum + (i.fields.type === 'debit' ? -1 : 1) * cents(i.fields.amount), cents(closing.textContent));
        document.getElementById('provisional-balance').textContent = money(total, closing.textContent);
        provisional.hidden = false;
      } else {
        provisional.hidden = true;
      }
    };
    const notice = (text, role) => {
      const flash = document.getElementById('flash');
      if (!flash || !text) return;
      const p = document.createElement('p');
      p.className = role === 'alert' ? 'error' : 'notice';
      p.setAttribute('role', role);
      p.textContent = text;
      flash.replaceChildren(p);
    };
    const queue = async (form, key) => {
      const data = new FormData(form);
      const fields = {};
      for (const name of ['type', 'amount', 'description', 'category', 'occurred_at']) fields[name] = String(data.get(name) || '');
      // Dated when it was made, not when it is sent.
      if (!fields.occurred_at) fields.occurred_at = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
      await store('readwrite', (s) => s.put({ key, owner: box().dataset.owner, fields, created: Date.now() }));
      for (const name of ['amount', 'description', 'category', 'occurred_at']) form.elements.namedItem(name).value = '';
      form.elements.namedItem('idempotency_key').value = crypto.randomUUID();
      notice(box().dataset.queued, 'status');
      changed();
      await render();
      form.elements.namedItem('amount').focus();
    };
    const send = async () => {
      const items = await mine();
      if (!items.length) return;
      // A fresh form token: this page may be older than the session (opened offline, or
      // signed in again since).
      const fresh = await fetch('/record', { credentials: 'same-origin' });
      if (new URL(fresh.url).pathname === '/signin') { expired(true); return; }
      if (!fresh.ok) return;
      const csrf = parse(await fresh.text()).querySelector('input[name=csrf]')?.value;
      if (!csrf) return;
      expired(false);
      for (const item of items) {
        const body = new URLSearchParams({ ...item.fields, csrf, idempotency_key: item.key, then: 'today' });
        const response = await fetch('/entries', { method: 'POST', body, credentials: 'same-origin' });
        if (new URL(response.url).pathname === '/signin') { expired(true); return; }
        if (response.status >= 500) return; // try again later, same key
        if (!response.ok) {
          // Refused by the API (it says why): it would be refused again, so it leaves the queue.
          const page = parse(await response.text());
          const why = page.querySelector('.field-error, p.error');
          notice(`${item.fields.description}: ${why ? why.textContent : response.status}`, 'alert');
        }
        await store('readwrite', (s) => s.delete(item.key));
        changed();
      }
      await refreshPanel();
    };
    const flush = async () => {
      if (!box() || !navigator.onLine) return;
      try {
        if (navigator.locks) await navigator.locks.request('cashflow-outbox', send);
        else await send();
      } catch (_) {
        // offline again, or the server is unreachable: the queue stays for the next try
      }
      await render();
    };
    if (channel) channel.onmessage = () => { render().catch(() => {}); };
    return { available: () => Boolean(box() && window.indexedDB && window.crypto?.randomUUID), queue, render, flush };
  })();
  if (outbox.available()) {
    outbox.render().then(outbox.flush).catch(() => {});
    window.addEventListener('online', () => { outbox.flush(); });
    setInterval(() => { outbox.flush(); }, 30000);
  }

  if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {});
  // Signing out removes the pages the service worker kept for offline use.
  document.addEventListener('submit', (e) => {
    const form = e.target;
    if (form instanceof HTMLFormElement && form.classList.contains('signout') && window.caches) {
      e.preventDefault();
      caches.delete('cashflow-pages').finally(() => form.submit());
    }
  });

  // The record form, sent with fetch; the server's answer (the page after the redirect, or the
  // form with the API's errors) replaces the form and the notices.
  document.addEventListener('submit', async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || form.id !== 'record' || !window.fetch) return;
    e.preventDefault();
    if (!navigator.onLine && outbox.available()) {
      await outbox.queue(form, crypto.randomUUID());
      return;
    }
    const body = new URLSearchParams(new FormData(form, e.submitter || undefined));
    form.setAttribute('aria-busy', 'true');
    try {
      let response;
      try {
        response = await fetch(form.action, { method: 'POST', body, credentials: 'same-origin' });
      } catch (offline) {
        // The request may have reached the server: queue it under the key it was sent with.
        if (!outbox.available()) throw offline;
        await outbox.queue(form, body.get('idempotency_key') || crypto.randomUUID());
        return;
      }
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

  // Live "today" panel, polled where the front cannot stream events (data-poll): a
  // conditional GET every few seconds while the page is visible, 304 when nothing changed.
  const live = document.querySelector('[data-live]');
  if (live && live.dataset.poll) {
    const every = Math.max(1000, Number(live.dataset.poll) || 5000);
    let etag = '';
    const poll = async () => {
      const headers = etag ? { 'If-None-Match': etag } : {};
      const response = await fetch(live.dataset.live, { credentials: 'same-origin', cache: 'no-store', headers });
      if (response.status === 401) { location.href = '/signin?expired=1'; return; }
      live.dataset.state = response.ok || response.status === 304 ? 'live' : 'offline';
      if (response.status !== 200) return;
      etag = response.headers.get('ETag') || '';
      const panel = document.querySelector('[data-live]');
      const fresh = parse(await response.text()).getElementById(panel.id);
      if (fresh) panel.innerHTML = fresh.innerHTML;
      panel.dataset.refreshed = String(Date.now());
      outbox.render().catch(() => {});
    };
    refreshPanel = () => { etag = ''; return poll(); };
    setInterval(() => { if (!document.hidden) poll().catch(() => { live.dataset.state = 'offline'; }); }, every);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) poll().catch(() => {}); });
  } else if (live && window.EventSource) {
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
      outbox.render().catch(() => {});
    };
    refreshPanel = refresh;
    const connect = () => {
      source = new EventSource(lastId ? '/events?last_id=' + encodeURIComponent(lastId) : '/events');
      source.onopen = () => {
        delay = 1000;
        live.dataset.state = 'live';
        // Commits made while there was no stream (a reconnection, or a page opened offline
        // from the service worker's copy) are not replayed: refetch once connected.
        refresh().catch(() => {});
      };
      source.addEventListener('balance', (event) => {
        lastId = event.lastEventId || lastId;
        refresh().catch(() => {});
      });
      source.onerror = () => {
        live.dataset.state = 'offline';
        if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
        source.close();
        refresh().catch(() => {});
        timer = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      };
    };
    let timer = null;
    // Back online: reconnect now rather than at the end of the backoff.
    window.addEventListener('offline', () => { live.dataset.state = 'offline'; });
    window.addEventListener('online', () => {
      if (source && source.readyState !== EventSource.CLOSED) return;
      clearTimeout(timer);
      delay = 1000;
      connect();
    });
    connect();
  }
})();
