// cashflow service worker: the app shell offline, nothing else.
// - the versioned assets (styles, script, icons) and the manifest are cached at install and
//   served from the cache first; a new version of the app is a new cache, the old one is dropped;
// - "Hoje" and "Registrar" are fetched from the network first, and their last copy is kept to
//   open the app without a connection (the page script then queues what is recorded offline);
//   signing out deletes those copies;
// - everything else (the API, posts, events) goes to the network untouched.
// Served from /sw.js (scope /) with the app's version substituted below.
const VERSION = '__VERSION__';
const SHELL = `cashflow-shell-${VERSION}`;
const PAGES = 'cashflow-pages';
const ASSETS = ['app.css', 'app.js', 'icon.svg', 'icon-192.png'].map((name) => `/assets/${name}?v=${VERSION}`);
const OFFLINE_PAGES = ['/', '/record'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll([...ASSETS, '/manifest.webmanifest'])).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('cashflow-shell-') && k !== SHELL).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

const fromPages = async (path) => {
  const cache = await caches.open(PAGES);
  return (await cache.match(path)) || (await cache.match('/record')) || (await cache.match('/'))
    || new Response('offline', { status: 503, headers: { 'content-type': 'text/plain; charset=utf-8' } });
};

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith('/assets/') || url.pathname === '/manifest.webmanifest') {
    event.respondWith(caches.match(request).then((hit) => hit || fetch(request)));
    return;
  }
  if (request.mode !== 'navigate') return;
  event.respondWith(fetch(request).then((response) => {
    // A redirect (to sign in) or an error page is not the app shell.
    if (response.ok && !response.redirected && OFFLINE_PAGES.includes(url.pathname)) {
      const copy = response.clone();
      event.waitUntil(caches.open(PAGES).then((cache) => cache.put(url.pathname, copy)));
    }
    return response;
  }).catch(() => fromPages(url.pathname)));
});
