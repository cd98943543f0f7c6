//! The mirrors' wire contract over raw HTTP: Unleash shapes, commits behind tokens, `validate` warnings, gzip.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unleash_wire_contract() {
    let root = repo_root().join("tests/mirrors/flags");
    let server = TestServer::start(
        dir_server_reloader(root),
        Tokens::default(),
        fixture_server_options(),
    )
    .await;
    let addr = server.http;
    let path = "/api/client/features";

    // No Unleash-Client-Spec (ruby-unleash 3.2.5): only what it evaluates exactly, inline.
    let (code, head, legacy) = get_json(addr, path, &[]).await;
    assert_eq!(code, 200);
    assert_eq!(legacy["version"], 2);
    assert!(legacy.get("segments").is_none());
    assert_eq!(legacy["query"]["inlineSegmentConstraints"], true);
    let legacy_names = keys(&legacy);
    assert!(
        legacy_names.contains(&"by-ids".to_owned()) && !legacy_names.contains(&"theme".to_owned())
    );
    let legacy_tag = header(&head, "etag").unwrap().to_owned();
    // Spec below 4.2.0: everything the engine says exactly, segments inline.
    let (_, head, inline) = get_json(addr, path, &[("Unleash-Client-Spec", "4.1.0")]).await;
    assert!(inline.get("segments").is_none());
    let inline_names = keys(&inline);
    assert!(inline_names.contains(&"theme".to_owned()) && inline_names.len() > legacy_names.len());
    let inline_tag = header(&head, "etag").unwrap().to_owned();
    // 4.2.0 and later: segments separately, referenced by id.
    let (_, head, separate) = get_json(addr, path, &[("Unleash-Client-Spec", "6.1.0")]).await;
    let segments = separate["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    let staff = separate["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "staff-only")
        .unwrap();
    let id = &staff["strategies"][0]["segments"][0];
    assert!(
        segments
            .iter()
            .any(|s| &s["id"] == id && s["name"] == "staff"),
        "{staff}"
    );
    let inline_staff = inline["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "staff-only")
        .unwrap();
    assert_eq!(
        inline_staff["strategies"][0]["constraints"][0]["operator"],
        "STR_ENDS_WITH"
    );
    let separate_tag = header(&head, "etag").unwrap().to_owned();
    assert!(legacy_tag != inline_tag && inline_tag != separate_tag);
    // ETag and 304 per client kind.
    let (code, _, body) = http(
        addr,
        "GET",
        path,
        &[
            ("Unleash-Client-Spec", "6.1.0"),
            ("If-None-Match", &separate_tag),
        ],
        "",
    )
    .await;
    assert_eq!((code, body.as_str()), (304, ""));
    let (code, _, _) = http(addr, "GET", path, &[("If-None-Match", &separate_tag)], "").await;
    assert_eq!(code, 200, "another client's tag is not this body's");

    // Filters.
    let (_, _, prefixed) = get_json(
        addr,
        "/api/client/features?namePrefix=rollout-",
        &[("Unleash-Client-Spec", "6.1.0")],
    )
    .await;
    let names = keys(&prefixed);
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("rollout-")),
        "{names:?}"
    );
    assert_eq!(prefixed["segments"], separate["segments"]);
    let (_, _, other) = get_json(addr, "/api/client/features?project=other", &[]).await;
    assert_eq!(keys(&other), Vec::<String>::new());
    let (_, _, default) = get_json(addr, "/api/client/features?project=default", &[]).await;
    assert_eq!(keys(&default), legacy_names);
    for tag in ["simple:checkout", "team:payments", "checkout"] {
        let (_, _, tagged) = get_json(addr, &format!("/api/client/features?tag={tag}"), &[]).await;
        assert_eq!(keys(&tagged), ["by-ids"], "{tag}");
    }
    let (_, _, untagged) = get_json(addr, "/api/client/features?tag=simple:nothing", &[]).await;
    assert_eq!(keys(&untagged), Vec::<String>::new());

    // One feature; unknown and not-for-this-client ones are 404.
    let (code, _, one) = get_json(addr, "/api/client/features/by-ids", &[]).await;
    assert_eq!((code, one["name"].as_str()), (200, Some("by-ids")));
    assert_eq!(
        one["strategies"][0]["constraints"][0]["values"],
        json!(["u-1", "u-7"])
    );
    assert_eq!(
        get_json(addr, "/api/client/features/nope", &[]).await.0,
        404
    );
    assert_eq!(
        get_json(addr, "/api/client/features/theme", &[]).await.0,
        404
    );
    assert_eq!(
        get_json(
            addr,
            "/api/client/features/theme",
            &[("Unleash-Client-Spec", "5.0.0")]
        )
        .await
        .0,
        200
    );

    // Registration and metrics are accepted and dropped; writes are refused.
    for p in [
        "/api/client/register",
        "/api/client/metrics",
        "/ns/shop/api/client/metrics",
    ] {
        let (code, _, body) = http(addr, "POST", p, &[], "{\"appName\":\"x\"}").await;
        assert_eq!((code, body.as_str()), (202, ""), "{p}");
    }
    let (code, head, _) = http(addr, "GET", "/api/client/metrics", &[], "").await;
    assert_eq!((code, header(&head, "allow")), (405, Some("POST")));
    let (code, _, body) = http(addr, "DELETE", path, &[], "").await;
    assert_eq!(code, 405);
    assert!(
        body.contains("read-only") && body.contains("directory tests/mirrors/flags"),
        "{body}"
    );

    // Namespaces by prefix.
    let (code, _, shop) = get_json(
        addr,
        "/ns/shop/api/client/features",
        &[("Unleash-Client-Spec", "6.1.0")],
    )
    .await;
    assert_eq!(
        (code, keys(&shop)),
        (200, vec!["checkout-v2".to_owned(), "currency".to_owned()])
    );
    assert_eq!(
        get_json(addr, "/ns/nope/api/client/features", &[]).await.0,
        404
    );

    // The diagnostics endpoint lists what each mirror left out or bent, with places.
    let (code, _, diagnostics) = get_json(addr, "/mirrors/diagnostics", &[]).await;
    assert_eq!(code, 200);
    let findings = diagnostics["findings"].as_array().unwrap();
    let theme = findings
        .iter()
        .find(|f| f["flag"] == "theme" && f["mirror"] == "flipper")
        .unwrap();
    assert_eq!(theme["fidelity"], "omitted");
    assert_eq!(theme["file"], "variants.yaml");
    assert!(theme["line"].as_u64().unwrap() > 1);
    assert!(findings.iter().any(|f| f["flag"] == "rollout-flipper"
        && f["mirror"] == "unleash"
        && f["fidelity"] == "inexact"));
    // Node's engine reads the same body; its findings are its own.
    let trial = findings
        .iter()
        .find(|f| f["flag"] == "trial-ended" && f["mirror"] == "unleash-node")
        .unwrap();
    assert_eq!(trial["fidelity"], "inexact");
    assert!(
        trial["reason"]
            .as_str()
            .unwrap()
            .contains("ignores the field of DATE_AFTER and DATE_BEFORE"),
        "{trial}"
    );
    // Said in a field, not only in the reason's words: the clock is no unusual input.
    assert_eq!(trial["unusual_inputs_only"], false, "{trial}");
    assert!(
        findings
            .iter()
            .all(|f| f["unusual_inputs_only"].is_boolean())
    );
    assert!(findings.iter().any(|f| {
        f["unusual_inputs_only"] == true
            && f["fidelity"] == "inexact"
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("for unusual inputs only")
    }));
    assert_eq!(
        diagnostics["summary"]["unleash-node"]["exported"],
        diagnostics["summary"]["unleash"]["exported"]
    );
    let total = load(&repo_root().join("tests/mirrors/flags")).flag_count();
    let legacy_summary = &diagnostics["summary"]["unleash-legacy"];
    assert_eq!(legacy_summary["flags"], total);
    assert_eq!(
        legacy_summary["exported"].as_u64().unwrap() as usize,
        legacy_names.len()
            + keys(&get_json(addr, "/ns/shop/api/client/features", &[]).await.2).len()
    );
    server.stop().await;
}

/// A commit reaches the next poll (new ETag, new definition); tokens guard both mirrors in
/// every form their clients send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_follow_commits_behind_tokens() {
    let repo = repo_with("flags:\n  f:\n    rules: [{ ids: [u-1], serve: true }]\n");
    let reloader = crate::serve::git_reloader(repo.path(), false).unwrap();
    let options = Options {
        source: "git repository /srv/flags at main".into(),
        ..Options::default()
    };
    let server = TestServer::start(reloader, Tokens::parse("s3cret"), options).await;
    let addr = server.http;
    let unleash = [
        ("Authorization", "s3cret"),
        ("Unleash-Client-Spec", "6.1.0"),
    ];
    // "app:s3cret", as Flipper's adapter sends basic auth.
    let flipper = [("Authorization", "Basic YXBwOnMzY3JldA==")];

    for (path, headers) in [
        ("/api/client/features", &[][..]),
        ("/api/client/features", &[("Authorization", "wrong")][..]),
        (
            "/flipper/api/features",
            &[("Authorization", "Basic YXBwOndyb25n")][..],
        ),
        ("/mirrors/diagnostics", &[][..]),
    ] {
        assert_eq!(
            http(addr, "GET", path, headers, "").await.0,
            401,
            "{path} {headers:?}"
        );
    }
    // Refusals name the source: not to callers without a token.
    for (method, path) in [
        ("POST", "/flipper/api/features"),
        ("DELETE", "/api/client/features"),
    ] {
        let (code, _, body) = http(addr, method, path, &[], "").await;
        assert_eq!(code, 401, "{method} {path}");
        assert!(!body.contains("/srv/flags"), "{body}");
    }
    let (code, head, before) = get_json(addr, "/api/client/features", &unleash).await;
    assert_eq!(code, 200);
    let unleash_tag = header(&head, "etag").unwrap().to_owned();
    let (code, head, flipper_before) = get_json(addr, "/flipper/api/features", &flipper).await;
    assert_eq!(code, 200);
    assert_eq!(
        flipper_before["features"][0]["gates"][2]["value"],
        json!(["u-1"])
    );
    let flipper_tag = header(&head, "etag").unwrap().to_owned();
    assert_eq!(
        before["features"][0]["strategies"][0]["constraints"][0]["values"],
        json!(["u-1"])
    );

    commit(
        repo.path(),
        "flags:\n  f:\n    rules: [{ ids: [u-1, u-2], serve: true }]\n",
        "add u-2",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut with_tag: Vec<(&str, &str)> = unleash.to_vec();
    with_tag.push(("If-None-Match", &unleash_tag));
    let after = loop {
        let (code, head, body) = http(addr, "GET", "/api/client/features", &with_tag, "").await;
        if code == 200 {
            assert_ne!(header(&head, "etag"), Some(unleash_tag.as_str()));
            break serde_json::from_str::<Json>(&body).unwrap();
        }
        assert_eq!(code, 304, "the body did not change yet");
        assert!(
            std::time::Instant::now() < deadline,
            "the commit never reached the mirror"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        after["features"][0]["strategies"][0]["constraints"][0]["values"],
        json!(["u-1", "u-2"])
    );
    let mut with_tag: Vec<(&str, &str)> = flipper.to_vec();
    with_tag.push(("If-None-Match", &flipper_tag));
    let (code, _, body) = http(addr, "GET", "/flipper/api/features", &with_tag, "").await;
    assert_eq!(code, 200, "the Flipper body changed too");
    assert!(body.contains("\"u-2\""));

    let (code, _, body) = http(
        addr,
        "POST",
        "/flipper/api/features/f/actors",
        &flipper,
        "{\"flipper_id\":\"u-3\"}",
    )
    .await;
    assert_eq!(code, 405);
    assert!(body.contains("git repository /srv/flags at main"), "{body}");
    server.stop().await;
}

/// `vexil validate` warns about what each mirror leaves out or bends, with file:line:column;
/// `--mirrors` narrows the warnings; they never fail validation.
#[test]
fn validate_warns_about_mirror_findings() {
    let dir = repo_root().join("tests/mirrors/flags");
    let dir = dir.to_str().unwrap();
    let out = crate::helpers::vexil(&["validate", dir]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning[mirror-omitted]: flag `theme` is left out of the flipper mirror: Flipper features are on or off, and this flag serves string values"),
        "{text}"
    );
    assert!(text.contains("warning[mirror-inexact]: flag `rollout-flipper` is exported inexactly to the unleash mirror: rule `1` buckets its rollout with crc32"), "{text}");
    assert!(text.contains("--> "), "{text}");
    let out = crate::helpers::vexil(&["validate", "--format", "json", "--mirrors", "flipper", dir]);
    let diagnostics: Json = serde_json::from_slice(&out.stdout).unwrap();
    let diagnostics = diagnostics.as_array().unwrap();
    assert!(!diagnostics.is_empty());
    for d in diagnostics {
        let message = d["message"].as_str().unwrap();
        assert!(message.contains("the flipper mirror"), "{message}");
        assert!(d["line"].as_u64().unwrap() > 0 && d["file"].as_str().unwrap().ends_with(".yaml"));
    }
    let out = crate::helpers::vexil(&["validate", "--mirrors", "none", dir]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("mirror"));
    let out = crate::helpers::vexil(&["validate", "--mirrors", "flipr", dir]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mirror `flipr`"));
}

/// Whole bodies are also gzipped once per snapshot, as a representation with its own ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_bodies_are_served_gzipped_to_clients_that_accept_it() {
    use std::io::Read as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let root = repo_root().join("tests/mirrors/flags");
    let server = TestServer::start(
        dir_server_reloader(root),
        Tokens::default(),
        fixture_server_options(),
    )
    .await;
    for path in ["/api/client/features", "/flipper/api/features"] {
        let (_, plain_head, plain) = http(server.http, "GET", path, &[], "").await;
        assert_eq!(header(&plain_head, "content-encoding"), None);
        // Flipper's bodies also depend on the User-Agent (the profile).
        let vary = header(&plain_head, "vary").unwrap();
        assert!(vary.starts_with("accept-encoding"), "{vary}");
        assert_eq!(
            vary.contains("user-agent"),
            path.starts_with("/flipper"),
            "{vary}"
        );
        let plain_tag = header(&plain_head, "etag").unwrap().to_owned();
        // Raw bytes: the body is binary.
        let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept-Encoding: gzip;q=1.0,deflate;q=0.6,identity;q=0.3\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{path}");
        let gz_tag = header(&head, "etag").unwrap().to_owned();
        assert_ne!(
            gz_tag, plain_tag,
            "another representation, another strong tag"
        );
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&response[split + 4..])
            .read_to_string(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain, "{path}");
        assert!(
            response.len() < plain.len() / 3,
            "{path}: gzip saves most of the bytes"
        );
        // Either tag is current; `gzip;q=0` gets the plain body.
        for t in [&plain_tag, &gz_tag] {
            let (code, _, _) = http(
                server.http,
                "GET",
                path,
                &[("If-None-Match", t), ("Accept-Encoding", "gzip")],
                "",
            )
            .await;
            assert_eq!(code, 304, "{path} {t}");
        }
        let (_, head, body) = http(
            server.http,
            "GET",
            path,
            &[("Accept-Encoding", "gzip;q=0")],
            "",
        )
        .await;
        assert_eq!((header(&head, "content-encoding"), body), (None, plain));
    }
    server.stop().await;
}
