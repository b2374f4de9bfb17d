// Berth's Node.js launcher: serves the app defined in the entry file on $PORT.
//
// - An entry file that starts its own server (server.listen / app.listen)
//   runs as it is.
// - An entry file that exports an Express-style app (anything with .listen),
//   or a request handler function, is served on $PORT.
'use strict';

const http = require('http');
const path = require('path');

const entry = path.join('/app/code', process.argv[2] || 'index.js');
const port = Number(process.env.PORT || 8080);

// Notice whether the entry file listens by itself.
let listening = false;
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (...args) {
  listening = true;
  return listen.apply(this, args);
};

function serve(exported) {
  if (listening) return;
  const candidate = exported && (exported.default || exported.app || exported);
  const onError = (err) => {
    // The file's own server took the port after all.
    if (err.code === 'EADDRINUSE' && listening) return;
    console.error(`berth: cannot listen on port ${port}: ${err.message}`);
    process.exit(1);
  };
  const done = () => console.log(`berth: serving ${process.argv[2] || 'index.js'} on port ${port}`);
  if (candidate && typeof candidate.listen === 'function') {
    candidate.listen(port, '0.0.0.0', done).on('error', onError);
  } else if (typeof candidate === 'function') {
    http.createServer(candidate).listen(port, '0.0.0.0', done).on('error', onError);
  } else {
    console.error('berth: the entry file neither listens on $PORT nor exports an app or a request handler');
    process.exit(1);
  }
}

function load() {
  if (entry.endsWith('.mjs')) return import(entry);
  try {
    return Promise.resolve(require(entry));
  } catch (err) {
    if (err.code === 'ERR_REQUIRE_ESM') return import(entry);
    throw err;
  }
}

load()
  .then((exported) => setImmediate(() => serve(exported)))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
