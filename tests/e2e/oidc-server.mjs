// A real OAuth2/OIDC server for the end-to-end suite: the `oidc-provider` package (the same
// code many production identity servers run), configured the way a mail provider would be:
//
// - device flow, authorization code + PKCE with loopback redirects (any port, RFC 8252),
//   client credentials, refresh tokens rotated on every use (with reuse detection),
//   token introspection for Dovecot, a short access-token lifetime so refreshes really happen;
// - opaque access tokens for the resource "urn:mailtoken-e2e:mail" (scope `mail`), carrying the
//   user's `email` so Dovecot's `username_attribute = email` can match the SASL user;
// - a plain login + consent page (no JavaScript) that the scripted approver fills in;
// - /_e2e/grants: how many token-endpoint grants succeeded or failed, by grant type, so the
//   tests can count refreshes. Every grant is also appended to $E2E_STATE/grants.log.
//
// Everything comes from the environment (run.sh sets it); it listens on 127.0.0.1 only.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { URLSearchParams } from 'node:url';

import Provider, { errors } from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`oidc-server: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const PORT = Number(env('E2E_OIDC_PORT'));
const ISSUER = `http://127.0.0.1:${PORT}`;
const STATE = env('E2E_STATE');
const AT_TTL = Number(process.env.E2E_AT_TTL || 25);
const MAIL_RESOURCE = 'urn:mailtoken-e2e:mail';

// The one test user. The password is a test fixture, not a secret.
const USER = {
  id: 'alice',
  email: env('E2E_USER'),
  password: env('E2E_PASSWORD'),
};

const grants = { success: {}, error: {} };
const grantLog = path.join(STATE, 'grants.log');
function recordGrant(outcome, ctx, detail) {
  const type = ctx.oidc?.params?.grant_type || 'unknown';
  grants[outcome][type] = (grants[outcome][type] || 0) + 1;
  const client = ctx.oidc?.client?.clientId || '-';
  fs.appendFileSync(grantLog, `${new Date().toISOString()} ${outcome} ${type} ${client}${detail ? ` ${detail}` : ''}\n`);
}

const configuration = {
  clients: [
    {
      // mailtoken as users run it: a public (native) client, no secret.
      client_id: 'mailtoken-e2e',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
      response_types: ['code'],
      // Loopback redirect: any port matches (RFC 8252 section 7.3); mailtoken's default form
      // for a generic server, path included.
      redirect_uris: ['http://127.0.0.1/'],
    },
    {
      // An app-only client (client credentials) with a secret.
      client_id: 'mailtoken-e2e-app',
      client_secret: env('E2E_APP_SECRET'),
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'mail',
    },
    {
      // The same, registered for client_secret_basic: oidc-provider refuses any other method.
      client_id: 'mailtoken-e2e-app-basic',
      client_secret: env('E2E_APP_SECRET'),
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'mail',
    },
    {
      // Dovecot, which only introspects tokens.
      client_id: 'dovecot',
      client_secret: env('E2E_DOVECOT_SECRET'),
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  scopes: ['openid', 'offline_access', 'email', 'mail'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  async findAccount(_ctx, sub) {
    if (sub !== USER.id) return undefined;
    return {
      accountId: USER.id,
      async claims() {
        return { sub: USER.id, email: USER.email, email_verified: true };
      },
    };
  },
  // Dovecot matches the SASL user against this claim of the introspection reply.
  async extraTokenClaims(_ctx, token) {
    return token.accountId === USER.id ? { email: USER.email } : undefined;
  },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No `resource` parameter (mailtoken sends none): the token is for the mail servers.
      defaultResource: async () => MAIL_RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== MAIL_RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: 'mail',
          audience: MAIL_RESOURCE,
          accessTokenTTL: AT_TTL,
          // Opaque: Dovecot asks the introspection endpoint about every token.
          accessTokenFormat: 'opaque',
        };
      },
    },
  },
  // Every refresh hands out a new refresh token and consumes the old one; replaying a
  // consumed one revokes the whole grant (oidc-provider's reuse detection).
  rotateRefreshToken: true,
  // Access tokens expire quickly so the suite sees real refreshes; the rest lives long
  // enough for any run.
  ttl: {
    AccessToken: AT_TTL,
    ClientCredentials: AT_TTL,
    AuthorizationCode: 60,
    DeviceCode: 600,
    IdToken: 3600,
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
    RefreshToken: 86400,
  },
  interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['e2e-test-cookie-key-not-a-secret'] },
  renderError: async (ctx, out, error) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><title>error</title><h1>oidc error</h1><pre id="error">${escape(JSON.stringify(out))}</pre>`;
    console.error('oidc-server: render error', out, error?.message);
  },
};

const provider = new Provider(ISSUER, configuration);
provider.on('grant.success', (ctx) => recordGrant('success', ctx));
provider.on('grant.error', (ctx, err) => recordGrant('error', ctx, err?.error || err?.message));
provider.on('server_error', (_ctx, err) => console.error('oidc-server: server_error', err));

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>${body}</body></html>`;
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// The login and consent pages, after oidc-provider's own examples but without any styling.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction uid mismatch');
  const { prompt, params } = details;

  if (req.method === 'GET') {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    if (prompt.name === 'login') {
      res.end(page('Sign in', `<p>Client: ${escape(params.client_id)}</p>
<form method="post" action="/interaction/${uid}/login">
<input type="text" name="login" value="${escape(params.login_hint || '')}">
<input type="password" name="password">
<button type="submit">Sign in</button></form>`));
    } else {
      res.end(page('Allow access', `<p>${escape(params.client_id)} asks for: ${escape(params.scope || '')}</p>
<form method="post" action="/interaction/${uid}/confirm">
<input type="hidden" name="consent" value="yes">
<button type="submit">Allow</button></form>`));
    }
    return;
  }

  const form = await readForm(req);
  if (action === 'login') {
    if (prompt.name !== 'login') throw new Error('not a login prompt');
    const ok = (form.get('login') === USER.email || form.get('login') === USER.id)
      && form.get('password') === USER.password;
    if (!ok) {
      res.statusCode = 403;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(page('Sign in failed', '<p id="error">wrong user or password</p>'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: USER.id } }, { mergeWithLastSubmission: false });
    return;
  }
  if (action === 'confirm') {
    if (prompt.name !== 'consent') throw new Error('not a consent prompt');
    const { details: missing } = prompt;
    let { grantId } = details;
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    return;
  }
  throw new Error(`unknown interaction action ${action}`);
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, ISSUER);
    if (url.pathname === '/_e2e/grants') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(grants));
      return;
    }
    if (url.pathname === '/_e2e/health') {
      res.end('ok\n');
      return;
    }
    const m = url.pathname.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/);
    if (m) {
      await interaction(req, res, m[1], m[2]);
      return;
    }
    callback(req, res);
  } catch (err) {
    console.error('oidc-server:', err);
    if (!res.headersSent) {
      res.statusCode = 500;
      res.setHeader('content-type', 'text/html; charset=utf-8');
    }
    res.end(page('error', `<pre id="error">${escape(err.message)}</pre>`));
  }
});

server.listen(PORT, '127.0.0.1', () => {
  console.error(`oidc-server: ${ISSUER} (access tokens live ${AT_TTL}s)`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}
