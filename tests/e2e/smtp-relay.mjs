// The last hop after Dovecot's submission service: a small SMTP server on 127.0.0.1 that
// hands every accepted message to Dovecot's LMTP service, which stores it in the recipient's
// mailbox. Dovecot 2.3's submission service can only relay to an SMTP server (it speaks EHLO,
// and LMTP wants LHLO), and a full MTA (Postfix, Exim) would be far more to set up and stop:
// this is the "local MTA", 100 lines, nothing faked: the message still goes
// client -> Dovecot submission (OAuth2 checked) -> here -> Dovecot LMTP -> Maildir -> IMAP.
//
//   E2E_SMTP_PORT=... E2E_LMTP_PORT=... node smtp-relay.mjs
//
// Replies 250 to DATA only after LMTP accepted the message for every recipient, so a client
// that was told "sent" really has the message in the mailbox.

import net from 'node:net';

const PORT = Number(process.env.E2E_SMTP_PORT);
const LMTP_PORT = Number(process.env.E2E_LMTP_PORT);
const TIMEOUT_MS = 15000;

function log(msg) {
  console.error(`smtp-relay: ${msg}`);
}

// Read CRLF-terminated lines from a socket, one at a time, in order.
function lineReader(socket) {
  let buffer = '';
  const waiting = [];
  const lines = [];
  socket.setEncoding('latin1');
  socket.on('data', (chunk) => {
    buffer += chunk;
    let i;
    while ((i = buffer.indexOf('\r\n')) >= 0) {
      lines.push(buffer.slice(0, i));
      buffer = buffer.slice(i + 2);
    }
    while (waiting.length && lines.length) waiting.shift().resolve(lines.shift());
  });
  const fail = (err) => {
    while (waiting.length) waiting.shift().reject(err);
  };
  socket.on('error', fail);
  socket.on('close', () => fail(new Error('connection closed')));
  return () => new Promise((resolve, reject) => {
    if (lines.length) resolve(lines.shift());
    else waiting.push({ resolve, reject });
  });
}

// One SMTP/LMTP reply, possibly multi-line ("250-..." then "250 ...").
async function reply(readLine) {
  for (;;) {
    const line = await readLine();
    if (line[3] !== '-') return line;
  }
}

// Deliver one message over LMTP. `data` is still dot-stuffed, as received.
async function deliver(from, recipients, data) {
  const socket = net.connect(LMTP_PORT, '127.0.0.1');
  socket.setTimeout(TIMEOUT_MS, () => socket.destroy(new Error('LMTP timeout')));
  const readLine = lineReader(socket);
  const send = (line) => socket.write(`${line}\r\n`, 'latin1');
  const expect = async (code, what) => {
    const line = await reply(readLine);
    if (!line.startsWith(code)) throw new Error(`LMTP ${what}: ${line}`);
    return line;
  };
  try {
    await expect('220', 'greeting');
    send('LHLO e2e-relay');
    await expect('250', 'LHLO');
    send(`MAIL FROM:<${from}>`);
    await expect('250', 'MAIL FROM');
    for (const rcpt of recipients) {
      send(`RCPT TO:<${rcpt}>`);
      await expect('250', `RCPT TO ${rcpt}`);
    }
    send('DATA');
    await expect('354', 'DATA');
    socket.write(`${data.join('\r\n')}\r\n.\r\n`, 'latin1');
    // LMTP answers once per recipient.
    for (const rcpt of recipients) await expect('250', `delivery to ${rcpt}`);
    send('QUIT');
  } finally {
    socket.end();
  }
}

const address = (arg) => (arg.match(/<([^>]*)>/) || [])[1] ?? '';

const server = net.createServer(async (socket) => {
  socket.setTimeout(TIMEOUT_MS * 2, () => socket.destroy());
  const readLine = lineReader(socket);
  const send = (line) => socket.write(`${line}\r\n`, 'latin1');
  let from = null;
  let recipients = [];
  send('220 e2e-relay ESMTP');
  try {
    for (;;) {
      const line = await readLine();
      const verb = line.split(' ')[0].toUpperCase();
      if (verb === 'EHLO') {
        send('250-e2e-relay');
        send('250-8BITMIME');
        send('250-ENHANCEDSTATUSCODES');
        send('250 SIZE 10485760');
      } else if (verb === 'HELO') {
        send('250 e2e-relay');
      } else if (verb === 'MAIL') {
        from = address(line);
        recipients = [];
        send('250 2.1.0 ok');
      } else if (verb === 'RCPT') {
        recipients.push(address(line));
        send('250 2.1.5 ok');
      } else if (verb === 'DATA') {
        if (from === null || !recipients.length) {
          send('503 5.5.1 MAIL and RCPT first');
          continue;
        }
        send('354 go ahead');
        const data = [];
        for (let l = await readLine(); l !== '.'; l = await readLine()) data.push(l);
        try {
          await deliver(from, recipients, data);
          log(`delivered from <${from}> to ${recipients.map((r) => `<${r}>`).join(' ')}`);
          send('250 2.0.0 delivered');
        } catch (err) {
          log(`delivery failed: ${err.message}`);
          send('451 4.3.0 local delivery failed');
        }
        from = null;
        recipients = [];
      } else if (verb === 'RSET') {
        from = null;
        recipients = [];
        send('250 2.0.0 ok');
      } else if (verb === 'NOOP') {
        send('250 2.0.0 ok');
      } else if (verb === 'QUIT') {
        send('221 2.0.0 bye');
        socket.end();
        return;
      } else {
        send('502 5.5.2 not implemented');
      }
    }
  } catch {
    socket.destroy();
  }
});

server.listen(PORT, '127.0.0.1', () => log(`listening on 127.0.0.1:${PORT}, delivering to LMTP 127.0.0.1:${LMTP_PORT}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
