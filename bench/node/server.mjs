// The Node way, as a peer in spa-bff's benchmark (bench/run): express-openid-connect logs the
// user in (authorization-code flow with PKCE) and keeps the session in Redis (connect-redis);
// http-proxy-middleware forwards /api/* to the upstream with the access token as a Bearer
// header. BENCHMARK ONLY: plain http on loopback, no CSRF check.
//
// Environment (all required): PORT, ISSUER, CLIENT_ID, CLIENT_SECRET, UPSTREAM (http://host:port),
// REDIS_URL, SECRET (cookie signing). Prints exactly one line `listening <port>` when ready
// (after discovery and the Redis connection); exits on SIGTERM/SIGINT.
import http from 'node:http';
import express from 'express';
import eoc from 'express-openid-connect';
import { RedisStore } from 'connect-redis';
import { createClient } from 'redis';
import { createProxyMiddleware } from 'http-proxy-middleware';

const { auth, requiresAuth } = eoc;
const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`server.mjs: ${name} must be set`);
    process.exit(2);
  }
  return value;
};
const PORT = Number(env('PORT'));
const BASE_URL = `http://127.0.0.1:${PORT}`;

const redis = createClient({ url: env('REDIS_URL') });
redis.on('error', (err) => console.error('redis:', err.message));
await redis.connect();

const app = express();
app.disable('x-powered-by');
app.use(
  auth({
    issuerBaseURL: env('ISSUER'),
    baseURL: BASE_URL,
    clientID: env('CLIENT_ID'),
    clientSecret: env('CLIENT_SECRET'),
    secret: env('SECRET'),
    authRequired: false,
    idpLogout: false,
    enableTelemetry: false,
    authorizationParams: { response_type: 'code', response_mode: 'query', scope: 'openid profile email' },
    session: { store: new RedisStore({ client: redis, prefix: 'eoc:' }), cookie: { secure: false } },
  }),
);
// Keep-alive connections to the upstream, as nginx, Apache and spa-bff keep them.
const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
// The token goes in before the proxy copies the request's headers: http-proxy emits `proxyReq`
// only once a socket is assigned, too late for a request its client already gave up on.
const withToken = (req, _res, next) => {
  delete req.headers.cookie;
  req.headers.authorization = `Bearer ${req.oidc.accessToken.access_token}`;
  next();
};
app.use('/api', requiresAuth(), withToken, createProxyMiddleware({ target: env('UPSTREAM'), agent }));

const server = app.listen(PORT, '127.0.0.1', () => process.stdout.write(`listening ${PORT}\n`));
server.keepAliveTimeout = 120_000;
const shutdown = () => { server.close(); redis.quit().finally(() => process.exit(0)); };
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
