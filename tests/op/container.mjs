// Runs op.mjs in a container. op.mjs binds 127.0.0.1 (right for tests on a shared machine),
// which a published container port cannot reach: this entry point makes its HTTP server
// bind BIND (default 0.0.0.0) instead, and changes nothing else.
import { Server } from 'node:http';

const BIND = process.env.BIND || '0.0.0.0';
const listen = Server.prototype.listen;
Server.prototype.listen = function listenOnBind(port, host, ...rest) {
  return listen.call(this, port, host === '127.0.0.1' ? BIND : host, ...rest);
};
await import('./op.mjs');
