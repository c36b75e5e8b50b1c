//! Tests of the fake OAuth2 server (support/oauth_server) and the HTTP codec (support/http),
//! over raw TCP.
//! These do not involve the mailtoken binary.

use crate::support::env::*;
use crate::support::http::{parse_form, url_decode, url_encode};
use crate::support::oauth_server::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn poll(s: &FakeServer) -> (u16, serde_json::Value) {
    let (st, body) = post_form(
        s.addr(),
        "/token",
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", DEVICE_CODE),
            ("client_id", CLIENT_ID),
        ],
    );
    (st, json(&body))
}

fn refresh(s: &FakeServer, rt: &str) -> (u16, String) {
    post_form(
        s.addr(),
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", CLIENT_ID),
            ("scope", SCOPE),
        ],
    )
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64(i.as_bytes()), o, "b64({i:?})");
    }
}

#[test]
fn form_decoding() {
    let f = parse_form(b"a=1&scope=mail+offline_access&x=%41%2b%2F%zz&empty=&flag&u=%C3%A9");
    assert_eq!(f["a"], "1");
    assert_eq!(f["scope"], "mail offline_access");
    assert_eq!(f["x"], "A+/%zz");
    assert_eq!(f["empty"], "");
    assert_eq!(f["flag"], "");
    assert_eq!(f["u"], "é");
    assert_eq!(url_decode("100%"), "100%");
    assert_eq!(url_decode(&url_encode("a b&c=d/é")), "a b&c=d/é");
}

#[test]
fn device_endpoint_and_spellings() {
    let s = FakeServer::start();
    let (st, body) = post_form(
        s.addr(),
        "/device",
        &[("client_id", CLIENT_ID), ("scope", SCOPE)],
    );
    assert_eq!(st, 200);
    let v = json(&body);
    assert_eq!(v["device_code"], DEVICE_CODE);
    assert_eq!(v["user_code"], USER_CODE);
    assert_eq!(v["verification_uri"], VERIFICATION_URI);
    assert!(v.get("verification_url").is_none());
    assert_eq!(v["interval"], 1);
    assert_eq!(v["expires_in"], 600);

    s.set_google_spelling(true);
    s.set_interval(None);
    let (_, body) = post_form(s.addr(), "/device", &[("client_id", CLIENT_ID)]);
    let v = json(&body);
    assert_eq!(v["verification_url"], VERIFICATION_URI);
    assert!(v.get("verification_uri").is_none());
    assert!(v.get("interval").is_none());

    // Missing client_id is rejected (and still recorded).
    let (st, _) = post_form(s.addr(), "/device", &[("scope", SCOPE)]);
    assert_eq!(st, 400);

    assert_eq!(s.count(Kind::Device), 3);
    let reqs = s.requests_of(Kind::Device);
    assert_eq!(reqs[0].param("scope"), Some(SCOPE));
    assert_eq!(reqs[0].param("client_id"), Some(CLIENT_ID));
    assert_eq!(reqs[0].method, "POST");
    assert!(
        reqs[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
}

#[test]
fn poll_queue_in_order_then_default() {
    let s = FakeServer::start();
    s.push_polls(&[
        Poll::Pending,
        Poll::Pending428,
        Poll::SlowDown,
        Poll::Denied,
        Poll::Success,
    ]);
    let (st, v) = poll(&s);
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (st, v) = poll(&s);
    assert_eq!(
        (st, v["error"].as_str()),
        (428, Some("authorization_pending"))
    );
    let (st, v) = poll(&s);
    assert_eq!((st, v["error"].as_str()), (400, Some("slow_down")));
    let (st, v) = poll(&s);
    assert_eq!((st, v["error"].as_str()), (400, Some("access_denied")));
    let (st, v) = poll(&s);
    assert_eq!(st, 200);
    assert_eq!(v["access_token"], "fake-at-1");
    assert_eq!(v["refresh_token"], "fake-rt-1");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    // Queue empty: default is expired_token.
    let (st, v) = poll(&s);
    assert_eq!((st, v["error"].as_str()), (400, Some("expired_token")));
    s.set_poll_default(Poll::Pending);
    let (_, v) = poll(&s);
    assert_eq!(v["error"], "authorization_pending");

    // Wrong device code.
    let (st, body) = post_form(
        s.addr(),
        "/token",
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", "nope"),
            ("client_id", CLIENT_ID),
        ],
    );
    assert_eq!(st, 400);
    assert_eq!(json(&body)["error"], "invalid_grant");

    assert_eq!(s.count(Kind::Poll), 8);
    let times = s.poll_times();
    assert_eq!(times.len(), 8);
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(s.is_valid_refresh_token("fake-rt-1"));
}

#[test]
fn refresh_rotation_revokes_old_token() {
    let s = FakeServer::start();
    s.add_refresh_token("seed");
    let (st, body) = refresh(&s, "seed");
    assert_eq!(st, 200);
    let v = json(&body);
    assert_eq!(v["access_token"], "fake-at-1");
    assert_eq!(v["refresh_token"], "fake-rt-1");
    assert!(!s.is_valid_refresh_token("seed"));
    assert!(s.was_revoked("seed"));
    assert!(s.is_valid_refresh_token("fake-rt-1"));
    // Reusing the revoked one fails.
    let (st, body) = refresh(&s, "seed");
    assert_eq!(st, 400);
    assert_eq!(json(&body)["error"], "invalid_grant");
    // Unknown one fails.
    let (st, _) = refresh(&s, "never-issued");
    assert_eq!(st, 400);
    let (st, body) = refresh(&s, "fake-rt-1");
    assert_eq!(st, 200);
    assert_eq!(json(&body)["access_token"], "fake-at-2");
    assert_eq!(s.count(Kind::Refresh), 4);
    assert_eq!(s.issued_access_tokens(), vec!["fake-at-1", "fake-at-2"]);
    let r = &s.requests_of(Kind::Refresh)[0];
    assert_eq!(r.param("refresh_token"), Some("seed"));
    assert_eq!(r.param("scope"), Some(SCOPE));
}

#[test]
fn refresh_keep_and_string_expiry_and_lifetime() {
    let s = FakeServer::start();
    s.add_refresh_token("seed");
    s.set_refresh(Refresh::Keep);
    s.set_lifetime(120);
    s.set_expires_in_as_string(true);
    let (st, body) = refresh(&s, "seed");
    assert_eq!(st, 200);
    let v = json(&body);
    assert!(v.get("refresh_token").is_none());
    assert_eq!(v["expires_in"], "120");
    assert!(s.is_valid_refresh_token("seed"));
    let (st, _) = refresh(&s, "seed");
    assert_eq!(st, 200);
}

#[test]
fn refresh_failure_modes() {
    let s = FakeServer::start();
    s.add_refresh_token("seed");
    s.set_refresh(Refresh::InvalidGrant);
    let (st, body) = refresh(&s, "seed");
    assert_eq!(
        (st, json(&body)["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    s.set_refresh(Refresh::ServerError);
    let (st, body) = refresh(&s, "seed");
    assert_eq!((st, body.as_str()), (500, SERVER_ERROR_BODY));
    s.set_refresh(Refresh::Html);
    let (st, body) = refresh(&s, "seed");
    assert_eq!(st, 200);
    assert!(body.starts_with("<!DOCTYPE html>"));
    s.set_refresh(Refresh::MalformedJson);
    let (st, body) = refresh(&s, "seed");
    assert_eq!(st, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    // None of these revoked anything.
    assert!(s.is_valid_refresh_token("seed"));
    assert_eq!(s.issued_access_tokens().len(), 0);
}

#[test]
fn refresh_delay_is_applied_and_concurrent() {
    let s = FakeServer::start();
    s.add_refresh_token("seed");
    s.set_refresh(Refresh::Keep);
    s.set_refresh_delay_ms(300);
    let t = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr();
            std::thread::spawn(move || {
                post_form(
                    addr,
                    "/token",
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", "seed"),
                        ("client_id", CLIENT_ID),
                    ],
                )
                .0
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(300), "{el:?}");
    // The delay must not serialize requests (4 x 300 ms).
    assert!(el < Duration::from_millis(1100), "{el:?}");
    assert_eq!(s.count(Kind::Refresh), 4);
}

#[test]
fn chunked_body_and_split_writes() {
    let s = FakeServer::start();
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Head split across writes, chunked body.
    c.write_all(b"POST /device HTTP/1.1\r\nHost: x\r\nTransfer-")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"Encoding: chunked\r\n\r\n9\r\nclient_id\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"5\r\n=abc&\r\n").unwrap();
    c.write_all(b"A\r\nscope=mail\r\n0\r\n\r\n").unwrap();
    let mut buf = String::new();
    std::io::Read::read_to_string(&mut c, &mut buf).unwrap();
    assert!(buf.starts_with("HTTP/1.1 200 OK\r\n"), "{buf}");
    let r = &s.requests_of(Kind::Device)[0];
    assert_eq!(r.param("client_id"), Some("abc"));
    assert_eq!(r.param("scope"), Some("mail"));
}

#[test]
fn unknown_paths_methods_and_grants() {
    let s = FakeServer::start();
    let (st, _) = raw_request(s.addr(), b"GET /token HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(st, 405);
    let (st, _) = post_form(s.addr(), "/nope", &[("client_id", CLIENT_ID)]);
    assert_eq!(st, 404);
    let (st, body) = post_form(
        s.addr(),
        "/token",
        &[("grant_type", "password"), ("client_id", CLIENT_ID)],
    );
    assert_eq!(st, 400);
    assert_eq!(json(&body)["error"], "unsupported_grant_type");
    let (st, _) = raw_request(s.addr(), b"garbage\r\n\r\n");
    assert_eq!(st, 400);
    assert_eq!(s.count(Kind::Other), 3);
    assert_eq!(s.total(), 3);
}

#[test]
fn drop_shuts_down_promptly_even_with_idle_client() {
    let s = FakeServer::start();
    let addr = s.addr();
    // An idle connection that never sends a request.
    let _idle = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(s);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn closed_port_refuses() {
    let p = closed_port();
    let addr = format!("127.0.0.1:{p}").parse().unwrap();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn run_helper_times_out_and_kills() {
    let env = TestEnv::empty();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30").current_dir(env.dir.path());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Running::spawn(cmd, "sleep 30".into()).wait(Duration::from_millis(300))
    }));
    assert!(r.is_err(), "wait() must panic on timeout");
}

#[test]
fn drop_cuts_a_long_scripted_delay_short() {
    let s = FakeServer::start();
    s.add_refresh_token("seed");
    s.set_refresh_delay_ms(60_000);
    let addr = s.addr();
    let client = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = "grant_type=refresh_token&refresh_token=seed&client_id=x";
        let raw = format!(
            "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut buf);
    });
    let t0 = Instant::now();
    while s.count(Kind::Refresh) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "request never arrived"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t = Instant::now();
    drop(s);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
    client.join().unwrap();
}
