//! Clients that hold connections and streams: never-reading streams, slowloris sockets under a
//! lowered descriptor limit, stream caps, idle and ping-deaf connections.

use super::*;

/// Before the fix every change event held its snapshot, and a stream that stopped reading kept
/// up to 1,024 events: RSS grew with every swap for as long as the client stayed. A stream may
/// still hold a bounded number of events, so the first swaps fill whatever it buffers (and warm
/// the allocator) and only the growth after them is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_never_read_pin_no_snapshots() {
    const FILES: usize = 6;
    const PER_FILE: usize = 500;
    /// Swaps that fill every bounded buffer of the stalled streams.
    const FILL: usize = 20;
    /// Swaps over which RSS growth is measured.
    const SWAPS: usize = 30;
    // Measured (debug builds): 238 MiB (7.9 MiB a swap) before the fix, 8 MiB after it.
    const BOUND_MIB: f64 = 60.0;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let write_generation = |generation: usize| {
        std::fs::create_dir_all(repo.path().join("flags")).unwrap();
        for file in 0..FILES {
            let keys = (0..PER_FILE).map(|i| format!("flag-{file}-{i}"));
            std::fs::write(
                repo.path().join(format!("flags/part-{file}.yaml")),
                flags_file(keys, generation),
            )
            .unwrap();
        }
        commit_all(repo.path(), &format!("generation {generation}"))
    };
    let first = write_generation(0);
    let server = Server::on_main(
        repo.path(),
        // The streams stay stalled for the whole test (the stalled-stream timeout would end
        // them after a minute): what is measured is what a stalled stream holds.
        &[("VEXIL_STALLED_STREAM_TIMEOUT", "1h")],
    )
    .await;
    assert!(served(&server, &first, PATIENCE).await);

    // A Watch and a flagd EventStream with a stream window of 0 (their h2 client still answers
    // pings), and a raw client that sends a Watch and never reads its socket.
    let watch = stalled_stream(server.grpc, "/vexil.v1.FlagService/Watch").await;
    let events = stalled_stream(server.grpc, "/flagd.evaluation.v1.Service/EventStream").await;
    let mut deaf = TcpStream::connect(server.grpc).await.unwrap();
    let mut hello = wire::hello();
    hello.extend(wire::grpc_call(1, "/vexil.v1.FlagService/Watch"));
    deaf.write_all(&hello).await.unwrap();

    let start = rss_mib(server.pid());
    let swap_through = |generations: std::ops::Range<usize>| {
        let (server, write_generation) = (&server, &write_generation);
        async move {
            for generation in generations {
                let revision = write_generation(generation);
                assert!(
                    served(server, &revision, PATIENCE).await,
                    "generation {generation} not served within {PATIENCE:?}"
                );
            }
        }
    };
    swap_through(1..1 + FILL).await;
    let before = rss_mib(server.pid());
    swap_through(1 + FILL..1 + FILL + SWAPS).await;
    let after = rss_mib(server.pid());
    let growth = after - before;
    assert!(
        growth < BOUND_MIB,
        "RSS grew {growth:.0} MiB ({:.1} MiB a swap) over {SWAPS} swaps of {} flags after {FILL} swaps with 3 streams that never read ({start:.0} -> {before:.0} -> {after:.0} MiB)",
        growth / SWAPS as f64,
        FILES * PER_FILE
    );
    assert!(
        watch.is_open() && events.is_open(),
        "the stalled streams were ended: the measure is void"
    );
    drop((watch, events, deaf));
}

// ---------------------------------------------------------------------------------------------
// 2. Slowloris under a lowered descriptor limit; streams per connection
// ---------------------------------------------------------------------------------------------

/// Before the fix half-sent headers and silent gRPC connections stayed open for good; at the
/// descriptor limit new clients were locked out, the directory reloader judged a valid revision
/// invalid ("Too many open files") and the gRPC accept loop spun on a core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_under_a_lowered_descriptor_limit() {
    const SOCKETS: usize = 300;
    let dir = small_dir("one");
    let server = Process::spawn(
        &[dir.path().to_str().unwrap(), "--quiet-period", "100ms"],
        &[("VEXIL_HEADER_READ_TIMEOUT", "2s")],
        Some(256),
    )
    .serving()
    .await
    .unwrap();
    let pid = server.pid();
    // A client connected before the flood (to read Status while it lasts).
    let mut control = server.client().await;
    assert_eq!(evaluate_a(&mut control).await.as_deref(), Some("one"));

    // 250 sockets send half a request header to the HTTP port, 50 open the gRPC port and send
    // nothing (no HTTP/2 preface).
    let mut sockets = Vec::new();
    for i in 0..SOCKETS {
        let to_grpc = i % 6 == 5;
        let addr = if to_grpc { server.grpc } else { server.http };
        let mut socket = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect within 10 s (the listen backlog holds unaccepted ones)")
            .unwrap();
        if !to_grpc {
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
        }
        sockets.push(socket);
    }
    write_a(dir.path(), "two");
    let descriptors = open_descriptors(pid);

    let mut verdicts = Verdicts::default();
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid) - cpu_before;
    verdicts.check(cpu < Duration::from_millis(500), || {
        format!("the server used {cpu:?} of CPU in 3 s with {descriptors} descriptors open (a spinning accept loop?)")
    });

    let closing: Vec<_> = sockets
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { closed_within(&mut s, Duration::from_secs(60)).await })
        })
        .collect();
    let mut closed = 0;
    for c in closing {
        closed += usize::from(c.await.unwrap());
    }
    verdicts.check(closed == SOCKETS, || {
        format!("the server closed {closed} of {SOCKETS} slowloris connections within 60 s")
    });

    let healthz = poll(PATIENCE, || server.get("/healthz")).await;
    verdicts.check(healthz.as_ref().is_some_and(|(c, _)| *c == 200), || {
        format!("a new client got no /healthz 200 within {PATIENCE:?}: {healthz:?}")
    });
    let fresh = poll(PATIENCE, || async {
        let channel = tokio::time::timeout(Duration::from_secs(10), channel(server.grpc))
            .await
            .ok()?;
        evaluate_a(&mut FlagServiceClient::new(channel)).await
    })
    .await;
    verdicts.check(fresh.is_some(), || {
        format!("a new gRPC client got no Evaluate answer within {PATIENCE:?}")
    });
    // The change made while the descriptors were taken is served, not judged invalid.
    let two = poll(PATIENCE, || async {
        (evaluate_a(&mut control.clone()).await.as_deref() == Some("two")).then_some(())
    })
    .await;
    verdicts.check(two.is_some(), || {
        format!("the directory change was not served within {PATIENCE:?}")
    });
    match control.status(proto::StatusRequest {}).await {
        Ok(status) => {
            let status = status.into_inner();
            let last_error = format!("{:?}", status.last_error);
            verdicts.check(
                status.invalid == 0 && !last_error.contains("open files"),
                || {
                    format!(
                        "a valid revision was judged invalid: {} invalid, last error {last_error}",
                        status.invalid
                    )
                },
            );
        }
        Err(e) => verdicts.check(false, || format!("Status failed: {e}")),
    }
    verdicts.finish();
}

/// Opens `max + 1` streams on one raw HTTP/2 connection without waiting for answers: the last
/// must be refused (RST_STREAM) and no other. Returns the SETTINGS_MAX_CONCURRENT_STREAMS the
/// server advertised, or what went wrong.
async fn over_the_stream_limit(
    addr: SocketAddr,
    request: impl Fn(u32) -> Vec<u8>,
) -> Result<u32, String> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&wire::hello()).await.unwrap();
    let settings = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wire::read(&mut tcp).await {
                Ok(Some(f)) if f.kind == wire::SETTINGS && f.flags & wire::ACK == 0 => {
                    return Some(f);
                }
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
    .ok_or("no SETTINGS from the server")?;
    tcp.write_all(&wire::frame(wire::SETTINGS, wire::ACK, 0, &[]))
        .await
        .unwrap();
    let advertised = settings.setting(wire::MAX_CONCURRENT_STREAMS);
    let max = advertised.unwrap_or(200);
    let mut requests = Vec::new();
    for i in 0..=max {
        requests.extend(request(2 * i + 1));
    }
    let last = 2 * max + 1;
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&requests).await;
        write
    });
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match wire::read(&mut read).await {
                Ok(Some(f)) if f.kind == wire::RST_STREAM && f.stream == last => {
                    return Ok(f.error_code());
                }
                Ok(Some(f)) if f.kind == wire::RST_STREAM => {
                    return Err(format!("stream {} of {last} was reset ({})", f.stream, f.error_code()));
                }
                Ok(Some(f)) if f.kind == wire::GOAWAY => {
                    return Err(format!("GOAWAY ({}) instead of refusing stream {last}", f.error_code()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("connection closed".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "stream {last} (number {}) was not refused within 15 s; the server advertised {advertised:?}",
            max + 1
        ))
    });
    writer.abort();
    let code = outcome?;
    if code != wire::REFUSED_STREAM {
        return Err(format!(
            "stream {last} reset with {code}, not REFUSED_STREAM"
        ));
    }
    advertised.ok_or_else(|| "no SETTINGS_MAX_CONCURRENT_STREAMS advertised".to_owned())
}

/// Before the fix one gRPC connection could open 20,000 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_opens_at_most_max_concurrent_streams() {
    let dir = small_dir("one");
    let server = Server::start(&[dir.path().to_str().unwrap()], &[]).await;
    let mut verdicts = Verdicts::default();
    // Watch streams stay open; so do OFREP requests whose body never comes.
    let grpc = over_the_stream_limit(server.grpc, |s| {
        wire::grpc_call(s, "/vexil.v1.FlagService/Watch")
    })
    .await;
    verdicts.check(grpc == Ok(200), || format!("gRPC port: {grpc:?}"));
    let http = over_the_stream_limit(server.http, |s| {
        wire::request(s, "POST", "/ofrep/v1/evaluate/flags/a", false, false)
    })
    .await;
    verdicts.check(http == Ok(200), || format!("HTTP port: {http:?}"));
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Idle and ping-deaf connections
// ---------------------------------------------------------------------------------------------

/// Before the fix idle keep-alive and HTTP/2 connections stayed open for good, and nothing
/// pinged a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_ping_deaf_connections_are_closed() {
    let dir = small_dir("one");
    let server = Server::start(
        &[dir.path().to_str().unwrap()],
        &[
            ("VEXIL_IDLE_TIMEOUT", "2s"),
            ("VEXIL_HTTP2_KEEPALIVE_INTERVAL", "1s"),
            ("VEXIL_HTTP2_KEEPALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;

    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let http1 = async {
        let mut tcp = TcpStream::connect(server.http).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while !response.ends_with(b"ok\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            response.extend_from_slice(&buf[..n]);
        }
        closed_within(&mut tcp, PATIENCE).await
    };
    // HTTP/2 on the gRPC port: one health check answered (pings answered too), then nothing.
    let http2 = async {
        let mut tcp = TcpStream::connect(server.grpc).await.unwrap();
        let mut hello = wire::hello();
        hello.extend(wire::grpc_call(1, "/grpc.health.v1.Health/Check"));
        tcp.write_all(&hello).await.unwrap();
        until_closed(&mut tcp, true, PATIENCE).await
    };
    // A Watch in flight (so the connection is not idle) on a client that never answers pings.
    let deaf = async {
        let mut tcp = TcpStream::connect(server.grpc).await.unwrap();
        let mut hello = wire::hello();
        hello.extend(wire::grpc_call(1, "/vexil.v1.FlagService/Watch"));
        tcp.write_all(&hello).await.unwrap();
        until_closed(&mut tcp, false, PATIENCE).await
    };
    let (http1, http2, deaf) = tokio::join!(http1, http2, deaf);
    let mut verdicts = Verdicts::default();
    verdicts.check(http1, || {
        format!("an idle HTTP/1.1 keep-alive connection was still open after {PATIENCE:?} (idle timeout 2 s)")
    });
    verdicts.check(http2.0.is_some(), || {
        format!("an idle HTTP/2 connection was still open after {PATIENCE:?} (idle timeout 2 s)")
    });
    verdicts.check(deaf.0.is_some() && deaf.1 > 0, || {
        format!(
            "a client that never answers pings: {:?} after {} ping(s) within {PATIENCE:?} (keepalive 1 s + 1 s)",
            deaf.0, deaf.1
        )
    });
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Remote reads that hang
// ---------------------------------------------------------------------------------------------
