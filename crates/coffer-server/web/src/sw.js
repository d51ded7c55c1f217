// The download service worker: turns plaintext that the page decrypts into a
// browser download, streamed to disk, never whole in memory.
//
// The page navigates a hidden iframe to /assets/dl/<id>/<name>?size=N, where
// <id> is random. This worker answers that navigation with a stream that
// pulls one piece at a time from the page over the BroadcastChannel
// "coffer-dl-<id>" (so the page decrypts only as fast as the disk takes it).
// A BroadcastChannel rather than a MessagePort posted to the worker: Chromium
// 148 headless closes the page on ServiceWorker.postMessage under
// playwright, and a channel keeps the worker stateless (it may be stopped and
// restarted between the page's messages).
//
// If the page reports a failure (tampered, truncated, network), the stream
// errors and the browser marks the download failed and deletes its partial
// file: nothing that looks complete is left. The page sends the final piece
// only after the signature verified.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  const match = /^\/assets\/dl\/([A-Za-z0-9_-]{16,64})\/([^/]+)$/.exec(url.pathname);
  if (!match) return;
  const size = Number(url.searchParams.get("size"));
  event.respondWith(streamed(match[1], decodeURIComponent(match[2]), size));
});

function streamed(id, name, size) {
  const channel = new BroadcastChannel(`coffer-dl-${id}`);
  let waiting = null;
  channel.onmessage = (event) => {
    const resolve = waiting;
    waiting = null;
    resolve?.(event.data);
  };
  const body = new ReadableStream(
    {
      async pull(controller) {
        const next = await new Promise((resolve) => {
          waiting = resolve;
          channel.postMessage({ pull: true });
        });
        if (next.error) {
          controller.error(new Error(next.error));
          channel.close();
        } else if (next.done) {
          controller.close();
          channel.close();
        } else controller.enqueue(next.chunk);
      },
      cancel() {
        channel.postMessage({ cancelled: true });
        channel.close();
      },
    },
    { highWaterMark: 1 },
  );
  const headers = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
    "X-Content-Type-Options": "nosniff",
  };
  if (Number.isSafeInteger(size) && size >= 0) headers["Content-Length"] = String(size);
  return new Response(body, { headers });
}
