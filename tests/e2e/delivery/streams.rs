//! The SSE streams against the real `vexil serve`: `/events` (Watch's content: current first,
//! one change per swap, heartbeats, the namespace filter), `Last-Event-ID` after two missed
//! swaps, OFREP's stream with the token the bulk answer hands out (EventSource sends no
//! headers) and only its namespace's changes, and a client that never reads, dropped.

use super::*;

/// One SSE event: its `event:` name (`message` when absent), `id:` and `data:` (as JSON).
#[derive(Debug, Clone)]
struct Event {
    name: String,
    id: String,
    data: Json,
}

/// An SSE response read over raw HTTP/1.1 (chunked), event by event.
struct Sse {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
    head: String,
    text: String,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(PATIENCE, reader.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            if n == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        Sse {
            reader,
            head,
            text: String::new(),
        }
    }

    fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// The next event (comments and `retry:` skipped), waiting at most `PATIENCE`.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(at) = self.text.find("\n\n") {
                let block: String = self.text.drain(..at + 2).collect();
                let mut event = Event {
                    name: "message".into(),
                    id: String::new(),
                    data: Json::Null,
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).unwrap();
                        has_data = true;
                    }
                }
                if has_data {
                    return event;
                }
                continue;
            }
            // One chunk: its size in hex, the bytes, CRLF.
            let mut size = String::new();
            tokio::time::timeout(PATIENCE, self.reader.read_line(&mut size))
                .await
                .expect("an event in time")
                .unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.unwrap();
            chunk.truncate(size);
            self.text.push_str(&String::from_utf8(chunk).unwrap());
        }
    }

    /// The next event that is not a heartbeat.
    async fn next_news(&mut self) -> Event {
        loop {
            let event = self.next().await;
            if event.name != "heartbeat" {
                return event;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_with_last_event_id_after_two_missed_swaps() {
    let repo = repo(&[("a.yaml", &flag_a("one"))]);
    let server = serve(repo.path(), &["--heartbeat", "200ms"], &[]).await;
    let r0 = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    let mut events = Sse::open(server.http, "/events", &[]).await;
    assert_eq!(events.status(), 200, "{}", events.head);
    assert!(
        events
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    let current = events.next().await;
    assert_eq!(
        (current.name.as_str(), current.id.as_str()),
        ("current", r0.as_str())
    );
    assert_eq!(current.data["revision"], r0);
    // Heartbeats come while nothing changes.
    let beat = events.next().await;
    assert_eq!(beat.name, "heartbeat");
    assert_eq!(beat.data["revision"], r0);
    drop(events);

    // Two swaps while disconnected.
    let r1 = commit(repo.path(), &[("a.yaml", &flag_a("two"))], "two");
    wait_served(&server, &r1).await;
    let r2 = commit(repo.path(), &[("a.yaml", &flag_a("three"))], "three");
    wait_served(&server, &r2).await;

    // Resuming from r0: exactly the two changes missed, in order, then the next one live.
    let mut events = Sse::open(server.http, "/events", &[("Last-Event-ID", &r0)]).await;
    let first = events.next_news().await;
    assert_eq!(
        (first.name.as_str(), first.id.as_str()),
        ("change", r1.as_str())
    );
    assert_eq!(first.data["previous_revision"], r0);
    assert_eq!(first.data["changed"][0]["key"], "a");
    let second = events.next_news().await;
    assert_eq!(
        (second.name.as_str(), second.id.as_str()),
        ("change", r2.as_str())
    );
    let r3 = commit(repo.path(), &[("a.yaml", &flag_a("four"))], "four");
    let live = events.next_news().await;
    assert_eq!(
        (live.name.as_str(), live.id.as_str()),
        ("change", r3.as_str())
    );
    assert_eq!(live.data["previous_revision"], r2);

    // An id the server no longer knows: the current revision, as a new stream gets.
    let mut events = Sse::open(server.http, "/events", &[("Last-Event-ID", "gone")]).await;
    let current = events.next_news().await;
    assert_eq!(
        (current.name.as_str(), current.id.as_str()),
        ("current", r3.as_str())
    );

    // OFREP resuming from r1 missed r2 and r3: one re-fetch, naming the newest revision.
    let mut ofrep = Sse::open(server.http, "/ofrep/v1/events", &[("Last-Event-ID", &r1)]).await;
    assert_eq!(ofrep.status(), 200);
    let refetch = ofrep.next().await;
    assert_eq!(refetch.name, "message");
    assert_eq!(refetch.id, r3);
    assert_eq!(refetch.data["type"], "refetchEvaluation");
    assert_eq!(refetch.data["etag"], r3);
    assert!(refetch.data["lastModified"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ofrep_stream_opens_with_the_bulk_answers_token_and_only_for_its_namespace() {
    const TOKEN: &str = "stream-test-token";
    let other = |v: &str| {
        format!(
            "namespace: other\nflags:\n  o:\n    type: string\n    variants: {{ v: \"{v}\" }}\n    default: v\n"
        )
    };
    let repo = repo(&[("a.yaml", &flag_a("one")), ("o.yaml", &other("x"))]);
    let server = serve(
        repo.path(),
        &["--cors-origin", "http://app.test"],
        &[("VEXIL_TOKENS", TOKEN)],
    )
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let (code, head, body) = crate::helpers::http(
        server.http,
        "POST",
        "/ofrep/v1/evaluate/flags",
        &[("Authorization", &bearer)],
        "{}",
    )
    .await;
    assert_eq!(code, 200, "{head}\n{body}");
    let bulk: Json = serde_json::from_str(&body).unwrap();
    let stream = &bulk["eventStreams"][0];
    assert_eq!(stream["type"], "sse");
    let uri = stream["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = uri.strip_prefix("/ofrep/v1/events?token=").unwrap();
    assert_eq!(token.len(), 64);
    assert!(!uri.contains(TOKEN));

    // Without any token: refused; the default namespace's token does not open another one.
    let refused = Sse::open(server.http, "/ofrep/v1/events", &[]).await;
    assert_eq!(refused.status(), 401);
    let elsewhere = format!("/ns/other/ofrep/v1/events?token={token}");
    assert_eq!(Sse::open(server.http, &elsewhere, &[]).await.status(), 401);
    // The bulk answer of `other` hands out its own.
    let (_, _, body) = crate::helpers::http(
        server.http,
        "POST",
        "/ns/other/ofrep/v1/evaluate/flags",
        &[("Authorization", &bearer)],
        "{}",
    )
    .await;
    let other_uri: Json = serde_json::from_str(&body).unwrap();
    let other_uri = other_uri["eventStreams"][0]["endpoint"]["requestUri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(other_uri.starts_with("/ns/other/ofrep/v1/events?token="));
    assert_eq!(Sse::open(server.http, &other_uri, &[]).await.status(), 200);

    // As a page's EventSource opens it: no headers but its origin; CORS lets the page read it.
    let mut ofrep = Sse::open(server.http, &uri, &[("Origin", "http://app.test")]).await;
    assert_eq!(ofrep.status(), 200, "{}", ofrep.head);
    assert!(
        ofrep
            .head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://app.test"),
        "{}",
        ofrep.head
    );
    // A change to `other` only is not this stream's; the next change to `default` is.
    commit(repo.path(), &[("o.yaml", &other("y"))], "other");
    wait_for("the change to `other` to be served", || async {
        let (_, _, body) = crate::helpers::http(
            server.http,
            "POST",
            "/ns/other/ofrep/v1/evaluate/flags/o",
            &[("Authorization", &bearer)],
            "{}",
        )
        .await;
        body.contains(r#""value":"y""#)
    })
    .await;
    let mine = commit(repo.path(), &[("a.yaml", &flag_a("two"))], "mine");
    let event = ofrep.next().await;
    assert_eq!(event.data["type"], "refetchEvaluation");
    assert_eq!(event.id, mine, "the change to another namespace was sent");
    // `/events` takes the bearer token in a header, as curl sends it.
    let events = Sse::open(server.http, "/events", &[("Authorization", &bearer)]).await;
    assert_eq!(events.status(), 200);
    assert_eq!(Sse::open(server.http, "/events", &[]).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_never_reads_is_dropped() {
    let repo = repo(&[("a.yaml", &flag_a("one"))]);
    let server = serve(
        repo.path(),
        &["--heartbeat", "20ms", "--stalled-stream-timeout", "1s"],
        &[],
    )
    .await;
    // HTTP/2 with a stream window of 0: the client takes no byte of the body, ever.
    let tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get(format!("http://{}/events", server.http))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let _held = response;
    // A reader next to it keeps getting heartbeats.
    let mut reader = Sse::open(server.http, "/events", &[]).await;
    // The stalled one is ended (counted), within the bounded wait.
    wait_for("the stalled SSE stream to be dropped", || async {
        let (_, metrics) = server.get("/metrics").await.unwrap();
        metrics.contains("vexil_streams_stalled_total 1")
    })
    .await;
    // ... and its connection closed: nothing could be written to it any more.
    wait_for("the stalled stream's connection to be closed", || async {
        connection.is_finished()
    })
    .await;
    assert_eq!(reader.next().await.name, "current");
    assert_eq!(reader.next().await.name, "heartbeat");
}
