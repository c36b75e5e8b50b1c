// The scripted approver: plays the person in front of a browser, with no person.
//
//   node approve.mjs URL [--user-code CODE] --login USER --password PASS
//
// It opens URL (a device-flow verification page, or a browser-flow authorization URL), keeps
// the cookies, follows redirects, and fills in whatever form the server shows: the device user
// code, the login form, the consent form. It stops when the server shows a page with no form
// (the device flow's "you may close this window"), or when it is redirected away from the
// server (the browser flow's redirect to mailtoken's loopback listener, which it then delivers,
// as a browser would). Every request is bounded in time and the number of steps is capped.
//
// Exit 0 when the flow completed, 1 otherwise (with what the server said on stderr).

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const start = args[0];
const userCode = opt('--user-code');
const login = opt('--login');
const password = opt('--password');
if (!start || !login || !password) {
  console.error('usage: node approve.mjs URL [--user-code CODE] --login USER --password PASS');
  process.exit(2);
}

const origin = new URL(start).origin;
const jar = new Map();
const MAX_STEPS = 20;
const TIMEOUT_MS = 10000;

function say(msg) {
  console.error(`approver: ${msg}`);
}

function cookieHeader() {
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

function keepCookies(res) {
  for (const line of res.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (/expires=Thu, 01 Jan 1970/i.test(line) || value === '') jar.delete(name);
    else jar.set(name, value);
  }
}

// What a person would read on the page: the text, without markup, styles or scripts.
const pageText = (html) => html.replace(/<(style|script)\b[\s\S]*?<\/\1>/gi, ' ')
  .replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();

const decode = (s) => s.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n)))
  .replace(/&quot;/g, '"').replace(/&#x27;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>')
  .replace(/&amp;/g, '&');

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  return m ? decode(m[2] ?? m[3] ?? m[4]) : undefined;
}

// The first <form> of the page: where it goes and its inputs (buttons are not inputs, so the
// device flow's "abort" button is never pressed).
function parseForm(html, base) {
  const m = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
  if (!m) return undefined;
  const formTag = m[0].slice(0, m[0].indexOf('>') + 1);
  const fields = new URLSearchParams();
  for (const input of m[1].match(/<input\b[^>]*>/gi) || []) {
    const name = attr(input, 'name');
    if (name) fields.append(name, attr(input, 'value') ?? '');
  }
  return {
    action: new URL(attr(formTag, 'action') || base, base).toString(),
    method: (attr(formTag, 'method') || 'get').toUpperCase(),
    fields,
  };
}

async function request(url, method = 'GET', body = undefined) {
  const headers = { 'user-agent': 'mailtoken-e2e-approver', accept: 'text/html' };
  const cookies = cookieHeader();
  if (cookies && new URL(url).origin === origin) headers.cookie = cookies;
  if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
  const res = await fetch(url, {
    method,
    headers,
    body: body?.toString(),
    redirect: 'manual',
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  keepCookies(res);
  return res;
}

async function main() {
  let url = start;
  let method = 'GET';
  let body;
  let lastSubmission;
  for (let step = 0; step < MAX_STEPS; step += 1) {
    if (new URL(url).origin !== origin) {
      // Redirected away from the server: to the app's loopback listener. Deliver it.
      say(`redirected to the app: ${new URL(url).origin}${new URL(url).pathname}`);
      const res = await request(url);
      const text = await res.text();
      if (!res.ok) {
        say(`the app answered ${res.status}: ${text.slice(0, 300)}`);
        return 1;
      }
      return 0;
    }
    say(`${method} ${new URL(url).pathname}`);
    const res = await request(url, method, body);
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location'), url).toString();
      method = 'GET';
      body = undefined;
      await res.arrayBuffer();
      continue;
    }
    const html = await res.text();
    if (!res.ok || /id="error"/.test(html)) {
      say(`the server answered ${res.status}: ${pageText(html).slice(0, 400)}`);
      return 1;
    }
    const form = parseForm(html, url);
    if (!form) {
      say(`done: ${pageText(html).slice(0, 200)}`);
      return 0;
    }
    if (form.fields.has('user_code') && !form.fields.get('user_code')) {
      if (!userCode) {
        say('the page asks for a user code and none was given');
        return 1;
      }
      form.fields.set('user_code', userCode);
    }
    if (form.fields.has('login')) form.fields.set('login', login);
    if (form.fields.has('password')) form.fields.set('password', password);
    // The same form submitted twice with the same values: the server refused it (a wrong
    // user code shows the input form again with a message). Stop instead of looping.
    const compared = new URLSearchParams(form.fields);
    compared.delete('xsrf');
    const submission = `${form.method} ${form.action} ${compared}`;
    if (submission === lastSubmission) {
      say(`the server showed the same form again: ${pageText(html).slice(0, 300)}`);
      return 1;
    }
    lastSubmission = submission;
    if (form.method === 'GET') {
      const next = new URL(form.action);
      for (const [k, v] of form.fields) next.searchParams.set(k, v);
      url = next.toString();
      method = 'GET';
      body = undefined;
    } else {
      url = form.action;
      method = 'POST';
      body = form.fields;
    }
  }
  say(`gave up after ${MAX_STEPS} steps`);
  return 1;
}

main().then((code) => process.exit(code), (err) => {
  say(`failed: ${err.message}`);
  process.exit(1);
});
