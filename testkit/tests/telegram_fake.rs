//! The fake Telegram Bot API, driven over raw HTTP/1.1.

use std::time::{Duration, Instant};

use herald_testkit::telegram::{FakeTelegram, Fault};
use serde_json::{Value, json};
use tokio::net::TcpStream;

const TOKEN: &str = "123456:TEST-token";

// tokio's io-util is not enabled for this crate: readiness plus try_read/try_write.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
}

async fn read_to_end(stream: &TcpStream, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut buf = [0u8; 8192];
    loop {
        match read_some(stream, &mut buf).await? {
            0 => return Ok(out.len()),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One HTTP exchange on its own connection (`Connection: close`).
async fn http(
    fake: &FakeTelegram,
    verb: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let addr = fake.api_url().trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "{verb} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    write_all(&stream, request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    read_to_end(&stream, &mut response).await.unwrap();
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> (u16, Value) {
    let response = String::from_utf8(response.to_vec()).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

async fn call(fake: &FakeTelegram, method: &str, params: Value) -> (u16, Value) {
    http(
        fake,
        "POST",
        &format!("/bot{TOKEN}/{method}"),
        "application/json",
        &params.to_string(),
    )
    .await
}

async fn send(fake: &FakeTelegram, chat_id: i64, text: &str) -> (u16, Value) {
    call(
        fake,
        "SendMessage",
        json!({"chat_id": chat_id, "text": text}),
    )
    .await
}

fn assert_error(answer: &(u16, Value), status: u16, description: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["ok"], json!(false));
    assert_eq!(answer.1["error_code"], json!(status));
    assert_eq!(answer.1["description"], json!(description));
}

fn description(answer: &(u16, Value)) -> String {
    answer.1["description"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn get_me_describes_the_bot() {
    let fake = FakeTelegram::start().await;
    let (status, body) = call(&fake, "GetMe", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], json!(true));
    let me = &body["result"];
    assert_eq!(me["id"], json!(1));
    assert_eq!(me["is_bot"], json!(true));
    assert_eq!(me["first_name"], json!("herald-test"));
    assert_eq!(me["username"], json!("herald_test_bot"));
    assert_eq!(me["can_join_groups"], json!(true));
    assert_eq!(me["can_read_all_group_messages"], json!(false));
    assert_eq!(me["supports_inline_queries"], json!(false));
    assert_eq!(me["has_main_web_app"], json!(false));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "getme");
    assert_eq!(requests[0].token, TOKEN);
    assert_eq!(requests[0].answered, 200);
}

#[tokio::test]
async fn send_message_is_recorded_and_answered_with_a_message() {
    let fake = FakeTelegram::start().await;
    let before = Instant::now();
    let (status, body) = call(
        &fake,
        "SendMessage",
        json!({"chat_id": 42, "text": "<b>hi</b> &amp; bye", "parse_mode": "HTML",
               "disable_notification": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(true));
    let message = &body["result"];
    assert_eq!(message["message_id"], json!(1));
    assert!(message["date"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        message["chat"],
        json!({"id": 42, "type": "private", "first_name": "user"})
    );
    assert_eq!(message["from"]["id"], json!(1));
    assert_eq!(message["from"]["is_bot"], json!(true));
    assert_eq!(message["text"], json!("hi & bye"));

    // A string chat id, a group, and the next message id.
    let (status, body) = call(
        &fake,
        "SendMessage",
        json!({"chat_id": "-1001", "text": "to the group"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["message_id"], json!(2));
    assert_eq!(
        body["result"]["chat"],
        json!({"id": -1001, "type": "group", "title": "group"})
    );

    let sent = fake.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].method, "sendmessage");
    assert_eq!(sent[0].token, TOKEN);
    assert_eq!(sent[0].chat_id, Some(42));
    assert_eq!(sent[0].text.as_deref(), Some("<b>hi</b> &amp; bye"));
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(sent[0].disable_notification, Some(true));
    assert_eq!(sent[0].answered, 200);
    assert!(sent[0].at >= before);
    assert_eq!(sent[1].chat_id, Some(-1001));
    assert_eq!(sent[1].parse_mode, None);
    assert_eq!(sent[1].disable_notification, None);
    assert_eq!(fake.sent_to(42), vec!["<b>hi</b> &amp; bye".to_owned()]);
    assert_eq!(fake.sent_to(-1001), vec!["to the group".to_owned()]);
    assert!(fake.sent_to(7).is_empty());
}

#[tokio::test]
async fn method_names_are_case_insensitive_and_other_encodings_work() {
    let fake = FakeTelegram::start().await;
    for method in ["SendMessage", "sendMessage", "sendmessage", "SENDMESSAGE"] {
        let (status, body) = call(&fake, method, json!({"chat_id": 5, "text": method})).await;
        assert_eq!(status, 200, "{method}: {body}");
    }
    let (status, body) = http(
        &fake,
        "POST",
        &format!("/bot{TOKEN}/sendMessage"),
        "application/x-www-form-urlencoded",
        "chat_id=5&text=a+b%26c&disable_notification=true",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        &fake,
        "GET",
        &format!("/bot{TOKEN}/sendMessage?chat_id=5&text=from%20get"),
        "text/plain",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        &fake,
        "GET",
        &format!("/bot{TOKEN}/getme"),
        "text/plain",
        "",
    )
    .await;
    assert_eq!(status, 200);
    for method in ["DeleteWebhook", "setMyCommands"] {
        let (status, body) = call(&fake, method, json!({})).await;
        assert_eq!((status, &body["result"]), (200, &json!(true)), "{method}");
    }

    let texts = fake.sent_to(5);
    assert_eq!(texts.len(), 6);
    assert_eq!(texts[4], "a b&c");
    assert_eq!(texts[5], "from get");
    let form = &fake.sent()[4];
    assert_eq!(form.disable_notification, Some(true));
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.method == r.method.to_lowercase())
    );
}

#[tokio::test]
async fn unknown_methods_and_paths_and_bad_bodies_answer_telegram_errors() {
    let fake = FakeTelegram::start().await;
    let answer = call(&fake, "sendTelepathy", json!({})).await;
    assert_error(&answer, 404, "Not Found: method not found");
    let answer = http(&fake, "GET", "/nonsense", "text/plain", "").await;
    assert_error(&answer, 404, "Not Found: method not found");

    let answer = http(
        &fake,
        "POST",
        &format!("/bot{TOKEN}/sendMessage"),
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(answer.0, 400);
    assert_eq!(answer.1["error_code"], json!(400));
    let answer = call(&fake, "sendMessage", json!({"text": "no chat"})).await;
    assert_error(&answer, 400, "Bad Request: chat_id is empty");
    let answer = call(
        &fake,
        "sendMessage",
        json!({"chat_id": "@channel", "text": "x"}),
    )
    .await;
    assert_error(&answer, 400, "Bad Request: chat not found");
    let answer = call(&fake, "sendMessage", json!({"chat_id": 1})).await;
    assert_error(&answer, 400, "Bad Request: message text is empty");
    let answer = send(&fake, 1, "").await;
    assert_error(&answer, 400, "Bad Request: message text is empty");
    let answer = call(&fake, "sendMessage", json!({"chat_id": [1], "text": "x"})).await;
    assert_error(&answer, 400, "Bad Request: chat not found");
    assert!(fake.sent().is_empty());
    assert_eq!(fake.requests().len(), 8);
}

#[tokio::test]
async fn each_fault_answers_its_status_and_json() {
    let fake = FakeTelegram::start().await;

    fake.fail_next(1, Fault::RetryAfter(7));
    let answer = send(&fake, 1, "x").await;
    assert_error(&answer, 429, "Too Many Requests: retry after 7");
    assert_eq!(answer.1["parameters"], json!({"retry_after": 7}));

    for description in [
        "Forbidden: bot was blocked by the user",
        "Forbidden: bot can't initiate conversation with a user",
        "Forbidden: user is deactivated",
    ] {
        fake.fail_next(1, Fault::Forbidden(description.into()));
        assert_error(&send(&fake, 1, "x").await, 403, description);
    }

    let bad = "Bad Request: can't parse entities: Unsupported start tag \"div\" at byte offset 0";
    fake.fail_next(1, Fault::BadRequest(bad.into()));
    assert_error(&send(&fake, 1, "x").await, 400, bad);

    fake.fail_next(1, Fault::ServerError(500));
    assert_error(&send(&fake, 1, "x").await, 500, "Internal Server Error");
    fake.fail_next(1, Fault::ServerError(502));
    assert_error(&send(&fake, 1, "x").await, 502, "Bad Gateway");

    // Injected 429s are not the limits' refusals.
    assert_eq!(fake.too_many_requests(), 0);
    assert!(fake.sent().is_empty());
    let answered: Vec<u16> = fake.requests().iter().map(|r| r.answered).collect();
    assert_eq!(answered, vec![429, 403, 403, 403, 400, 500, 502]);
}

#[tokio::test]
async fn hang_never_answers_until_the_fake_is_dropped() {
    let fake = FakeTelegram::start().await;
    fake.fail_next(9, Fault::Hang);
    let addr = fake.api_url().trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let body = json!({"chat_id": 9, "text": "x"}).to_string();
    let request = format!(
        "POST /bot{TOKEN}/sendMessage HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    write_all(&stream, request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_millis(500), read_some(&stream, &mut buf)).await;
    assert!(read.is_err(), "a hung request was answered");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].answered, 0);

    // One-shot: the next send is delivered.
    assert_eq!(send(&fake, 9, "y").await.0, 200);

    // Dropping the fake closes the hung connection.
    drop(fake);
    let read = tokio::time::timeout(Duration::from_secs(2), read_some(&stream, &mut buf))
        .await
        .expect("the connection is closed when the fake is dropped");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn dropping_the_fake_closes_kept_alive_connections() {
    let fake = FakeTelegram::start().await;
    let addr = fake.api_url().trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let request =
        format!("GET /bot{TOKEN}/getMe HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    write_all(&stream, request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = read_some(&stream, &mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    drop(fake);
    let _ = write_all(&stream, request.as_bytes()).await;
    let read = tokio::time::timeout(Duration::from_secs(2), read_some(&stream, &mut buf))
        .await
        .expect("the kept-alive connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn fail_next_is_one_shot_and_fail_always_sticks_until_cleared() {
    let fake = FakeTelegram::start().await;
    fake.fail_next(1, Fault::ServerError(500));
    fake.fail_next(1, Fault::Forbidden("Forbidden: user is deactivated".into()));
    assert_eq!(send(&fake, 2, "other chat").await.0, 200);
    assert_eq!(send(&fake, 1, "a").await.0, 500);
    assert_eq!(send(&fake, 1, "b").await.0, 403);
    assert_eq!(send(&fake, 1, "c").await.0, 200);
    assert_eq!(fake.sent_to(1), vec!["c".to_owned()]);

    let blocked = "Forbidden: bot was blocked by the user";
    fake.fail_always(3, Fault::Forbidden(blocked.into()));
    for _ in 0..3 {
        assert_error(&send(&fake, 3, "x").await, 403, blocked);
    }
    assert_eq!(send(&fake, 4, "x").await.0, 200);
    fake.fail_next(4, Fault::RetryAfter(1));
    fake.clear_faults();
    assert_eq!(send(&fake, 3, "x").await.0, 200);
    assert_eq!(send(&fake, 4, "y").await.0, 200);
}

#[tokio::test]
async fn html_is_checked_like_telegram_does() {
    let fake = FakeTelegram::start().await;
    let html = |text: &str| json!({"chat_id": 1, "text": text, "parse_mode": "HTML"});

    let answer = call(&fake, "sendMessage", html("<div>x</div>")).await;
    assert_error(
        &answer,
        400,
        "Bad Request: can't parse entities: Unsupported start tag \"div\" at byte offset 0",
    );
    for bad in ["<b>unclosed", "<b><i>x</b></i>", "x</b>", "a < b"] {
        let answer = call(&fake, "sendMessage", html(bad)).await;
        assert_eq!(answer.0, 400, "{bad}");
        assert!(
            description(&answer).starts_with("Bad Request: can't parse entities: "),
            "{bad}: {}",
            answer.1
        );
    }
    // Parse mode in any case; allowed tags with attributes.
    let ok = json!({"chat_id": 1, "parse_mode": "html",
        "text": "<B>b</B> <a href=\"https://example.com\">l</a> <tg-spoiler>s</tg-spoiler> <pre><code class=\"language-rust\">x</code></pre> <blockquote>q</blockquote>"});
    let answer = call(&fake, "sendMessage", ok).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    // Without a parse mode, markup is just text.
    assert_eq!(send(&fake, 1, "<div>plain</div>").await.0, 200);

    // Length: 4096 visible UTF-16 units pass, 4097 do not.
    let answer = send(&fake, 1, &"x".repeat(5000)).await;
    assert_error(&answer, 400, "Bad Request: message is too long");
    let answer = send(&fake, 1, &"x".repeat(4097)).await;
    assert_error(&answer, 400, "Bad Request: message is too long");
    assert_eq!(send(&fake, 1, &"x".repeat(4096)).await.0, 200);
    // An astral character is two UTF-16 units.
    let answer = send(&fake, 1, &"😀".repeat(2049)).await;
    assert_error(&answer, 400, "Bad Request: message is too long");
    assert_eq!(send(&fake, 1, &"😀".repeat(2048)).await.0, 200);

    // `&amp;` counts as one character, tags as none.
    let text = format!("<b>{}</b>", "&amp;".repeat(4096));
    let answer = call(&fake, "sendMessage", html(&text)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["result"]["text"], json!("&".repeat(4096)));
    let text = format!("{}&#60;", "&amp;".repeat(4096));
    let answer = call(&fake, "sendMessage", html(&text)).await;
    assert_error(&answer, 400, "Bad Request: message is too long");
    // Only markup: empty.
    let answer = call(&fake, "sendMessage", html("<b></b>")).await;
    assert_error(&answer, 400, "Bad Request: message text is empty");
}

#[tokio::test]
async fn the_overall_limit_refuses_the_31st_message_in_a_second() {
    let fake = FakeTelegram::start().await;
    fake.enforce_limits(true);
    let url = fake.api_url();
    let fake = std::sync::Arc::new(fake);
    let tasks: Vec<_> = (1..=31)
        .map(|chat| {
            let fake = fake.clone();
            tokio::spawn(async move { send(&fake, chat, "hello").await })
        })
        .collect();
    let mut refused = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.0 != 200 {
            refused.push(answer);
        }
    }
    assert_eq!(refused.len(), 1, "{url}: {refused:?}");
    assert_eq!(refused[0].0, 429);
    assert!(refused[0].1["parameters"]["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(fake.too_many_requests(), 1);
    assert_eq!(fake.sent().len(), 30);
}

#[tokio::test]
async fn a_private_chat_gets_one_message_per_second() {
    let fake = FakeTelegram::start().await;
    fake.enforce_limits(true);
    assert_eq!(send(&fake, 77, "first").await.0, 200);
    let answer = send(&fake, 77, "second").await;
    assert_eq!(answer.0, 429, "{}", answer.1);
    let retry_after = answer.1["parameters"]["retry_after"].as_u64().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        description(&answer),
        format!("Too Many Requests: retry after {retry_after}")
    );
    assert_eq!(fake.too_many_requests(), 1);
    // Another chat is not affected; after a second the chat is free again.
    assert_eq!(send(&fake, 78, "other").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(send(&fake, 77, "third").await.0, 200);
    assert_eq!(
        fake.sent_to(77),
        vec!["first".to_owned(), "third".to_owned()]
    );
}

#[tokio::test]
async fn a_group_gets_twenty_messages_a_minute() {
    let fake = FakeTelegram::start().await;
    fake.enforce_limits(true);
    for n in 1..=20 {
        let answer = send(&fake, -500, &format!("message {n}")).await;
        assert_eq!(answer.0, 200, "message {n}: {}", answer.1);
    }
    let answer = send(&fake, -500, "message 21").await;
    assert_eq!(answer.0, 429, "{}", answer.1);
    let retry_after = answer.1["parameters"]["retry_after"].as_u64().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(fake.too_many_requests(), 1);
    assert_eq!(fake.sent_to(-500).len(), 20);
}

#[tokio::test]
async fn limits_are_off_until_enforced() {
    let fake = FakeTelegram::start().await;
    for _ in 0..3 {
        assert_eq!(send(&fake, 1, "x").await.0, 200);
    }
    fake.enforce_limits(true);
    assert_eq!(send(&fake, 1, "x").await.0, 200);
    assert_eq!(send(&fake, 1, "x").await.0, 429);
    fake.enforce_limits(false);
    assert_eq!(send(&fake, 1, "x").await.0, 200);
    assert_eq!(fake.too_many_requests(), 1);
}

#[tokio::test]
async fn get_updates_returns_pushed_updates_until_acknowledged() {
    let fake = FakeTelegram::start().await;
    let first = fake.push_update(json!({"message": {"text": "one"}}));
    let second = fake.push_update(json!({"message": {"text": "two"}}));
    assert_eq!(second, first + 1);

    let (status, body) = call(&fake, "GetUpdates", json!({"timeout": 0})).await;
    assert_eq!(status, 200);
    let updates = body["result"].as_array().unwrap();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["update_id"], json!(first));
    assert_eq!(updates[1]["message"]["text"], json!("two"));

    // Acknowledging the first leaves the second.
    let (_, body) = call(&fake, "getUpdates", json!({"offset": first + 1})).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    assert_eq!(body["result"][0]["update_id"], json!(second));

    // With everything acknowledged, it waits out the timeout, capped at 2 s.
    let started = Instant::now();
    let (_, body) = call(
        &fake,
        "getUpdates",
        json!({"offset": second + 1, "timeout": 30}),
    )
    .await;
    assert_eq!(body["result"], json!([]));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_millis(2900), "{waited:?}");

    // A long poll wakes up for a pushed update.
    let fake = std::sync::Arc::new(fake);
    let poller = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = call(
                &fake,
                "getUpdates",
                json!({"offset": second + 1, "timeout": 2}),
            )
            .await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = fake.push_update(json!({"update_id": 1000, "message": {"text": "three"}}));
    assert_eq!(third, 1000);
    let ((status, body), waited) = poller.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["update_id"], json!(1000));
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert_eq!(fake.push_update(json!({})), 1001);
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let fake = FakeTelegram::start().await;
    fake.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(send(&fake, 1, "slow").await.0, 200);
    assert_eq!(call(&fake, "getMe", json!({})).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(600));
    fake.set_latency(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(send(&fake, 2, "fast").await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
}
