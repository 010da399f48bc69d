// A real OIDC provider (panva's oidc-provider) for Drover's tests.
//
//   OIDC_PORT            port on 127.0.0.1; 0 = pick a free one
//   OIDC_CLIENT_ID       client id
//   OIDC_CLIENT_SECRET   its secret ('' = public client, token_endpoint_auth_method none)
//   OIDC_REDIRECT_URIS   comma-separated redirect URIs
//   OIDC_USERS           JSON {"alice":{"password":"pw","groups":["g"],"sub":"optional"}}
// Optional:
//   OIDC_CLI_CLIENT_ID, OIDC_CLI_CLIENT_SECRET, OIDC_CLI_REDIRECT_URIS
//       a second, native client (RFC 8252: http loopback redirects match on any port)
//   OIDC_LOOPBACK_ANY_PORT=1  let every client's http loopback redirect URIs match on
//       any port (RFC 8252 §7.3); the library does that for native clients only
//   OIDC_TEST_ADMIN=1  PUT /test/users/<name> (a user's JSON) and DELETE
//       /test/users/<name> change the users while it runs, as an admin of a
//       real provider would
//
// Prints one line "listening <issuer>" on stdout when ready; everything else goes to
// stderr. Exits when stdin closes or on SIGTERM/SIGINT.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

console.info = console.log = console.error; // the library's notices go to stdout otherwise
const { default: Provider } = await import('oidc-provider');

const env = process.env;
const list = (s) => (s ?? '').split(',').map((x) => x.trim()).filter(Boolean);
const users = JSON.parse(env.OIDC_USERS || '{}');
const bySub = new Map(Object.entries(users).map(([name, u]) => [u.sub ?? name, { ...u, name }]));

async function testAdmin(req, res) {
  const name = decodeURIComponent(req.url.slice('/test/users/'.length));
  const old = users[name];
  if (old) bySub.delete(old.sub ?? name);
  if (req.method === 'PUT') {
    let body = '';
    for await (const chunk of req) body += chunk;
    users[name] = JSON.parse(body);
    bySub.set(users[name].sub ?? name, { ...users[name], name });
  } else if (req.method === 'DELETE') {
    delete users[name];
  }
  res.writeHead(204).end();
}
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const isLoopbackHttp = (u) => { const p = URL.parse(u); return p?.protocol === 'http:' && LOOPBACK.has(p.hostname); };

function client(id, secret, redirectUris, nativeAlways) {
  const native = nativeAlways || (redirectUris.length > 0 && redirectUris.every(isLoopbackHttp));
  return {
    client_id: id,
    ...(secret ? { client_secret: secret } : {}),
    // a client_secret_basic client may use client_secret_post too (and vice versa)
    token_endpoint_auth_method: secret ? 'client_secret_basic' : 'none',
    application_type: native ? 'native' : 'web',
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  };
}
const clients = [client(env.OIDC_CLIENT_ID || 'drover', env.OIDC_CLIENT_SECRET ?? '', list(env.OIDC_REDIRECT_URIS), false)];
if (env.OIDC_CLI_CLIENT_ID) {
  clients.push(client(env.OIDC_CLI_CLIENT_ID, env.OIDC_CLI_CLIENT_SECRET ?? '',
    list(env.OIDC_CLI_REDIRECT_URIS || 'http://127.0.0.1/callback'), true));
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };

let handler = (_req, res) => { res.writeHead(503).end(); };
const server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(env.OIDC_PORT || 0), '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true }, // only S256 exists in v9
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false, // scope-requested claims go into the ID token too
  features: { devInteractions: { enabled: false } }, // they accept any password
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const u = bySub.get(sub);
    if (!u) return undefined;
    return {
      accountId: sub,
      claims: () => ({
        sub,
        preferred_username: u.name,
        name: u.displayName ?? u.name,
        email: u.email ?? `${u.name}@example.test`,
        email_verified: true,
        groups: u.groups ?? [],
      }),
    };
  },
  ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, RefreshToken: 86400, Interaction: 600, Session: 86400, Grant: 86400 },
  renderError(ctx, out) { ctx.type = 'html'; ctx.body = `<h1>oidc error</h1><pre>${escape(JSON.stringify(out, null, 2))}</pre>`; },
});

if (env.OIDC_LOOPBACK_ANY_PORT === '1') {
  const allowed = provider.Client.prototype.redirectUriAllowed;
  const noPort = (u) => { const p = URL.parse(u); if (!p) return undefined; p.port = ''; return p.href; };
  provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
    return allowed.call(this, value) || (isLoopbackHttp(value)
      && this.redirectUris.some((r) => isLoopbackHttp(r) && noPort(r) === noPort(value)));
  };
}

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(res, uid, status, error, username = '') {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Sign in</h1>${error ? `<p id="error" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Username <input name="username" id="username" autocomplete="username" value="${escape(username)}" autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"></label>
<button type="submit" id="submit">Sign in</button>
</form></body></html>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

// login form that checks OIDC_USERS; consent is given automatically
async function interaction(req, res) {
  const { pathname } = new URL(req.url, issuer);
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params, session, grantId } = details;
  if (req.method === 'POST' && pathname === `/interaction/${uid}/login`) {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    const user = Object.hasOwn(users, username) ? users[username] : undefined;
    if (!user || user.password !== form.get('password')) {
      return loginPage(res, uid, 401, 'Invalid username or password.', username);
    }
    return provider.interactionFinished(req, res, { login: { accountId: user.sub ?? username } },
      { mergeWithLastSubmission: false });
  }
  if (req.method === 'GET' && pathname === `/interaction/${uid}`) {
    if (prompt.name === 'login') return loginPage(res, uid, 200);
    if (prompt.name === 'consent') {
      const grant = grantId ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      return provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
        { mergeWithLastSubmission: true });
    }
  }
  res.writeHead(404).end();
}

const app = provider.callback();
handler = (req, res) => {
  if (env.OIDC_TEST_ADMIN === '1' && req.url.startsWith('/test/users/')) {
    testAdmin(req, res).catch((err) => { res.writeHead(400).end(String(err)); });
  } else if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction failed:', err);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}\n`);
    });
  } else {
    app(req, res);
  }
};

const stop = () => { server.close(); server.closeAllConnections(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).on('close', stop).on('error', stop).resume();
process.stdout.write(`listening ${issuer}\n`);
