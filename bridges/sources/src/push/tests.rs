use super::*;
use axum::http::Request as HttpRequest;
use std::sync::Mutex;
use tokio::sync::Notify;
use tower::ServiceExt;

/// A source that records what it got, and can be told to block or fail.
#[derive(Default)]
struct Probe {
    got: Mutex<Vec<(String, Vec<u8>)>>,
    block: Option<Arc<Notify>>,
    fail: Mutex<Option<kube_insight_store::Error>>,
}

#[async_trait]
impl PushSource for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn target(&self) -> &'static str {
        "test"
    }
    fn path(&self) -> &'static str {
        "/ingest/probe"
    }
    async fn ingest(&self, r: PushRequest) -> Result<PushOutcome, PushError> {
        if let Some(n) = &self.block {
            n.notified().await;
        }
        if let Some(e) = self.fail.lock().unwrap().take() {
            return Err(PushError::Store(e));
        }
        self.got.lock().unwrap().push((r.cluster, r.body.to_vec()));
        Ok(PushOutcome {
            accepted: 1,
            ..Default::default()
        })
    }
}

fn router(probe: Arc<Probe>, tokens: TokenMap, limits: PushLimits) -> Router {
    mount(
        Router::new(),
        probe,
        Arc::new(tokens),
        limits,
        Arc::new(Telemetry::new()),
    )
}

fn tokens() -> TokenMap {
    let mut t = TokenMap::open("default");
    t.insert("token-for-cluster-a", "a");
    t.insert("token-for-cluster-b", "b");
    t
}

fn post(body: impl Into<Body>, auth: Option<&str>, encoding: Option<&str>) -> HttpRequest<Body> {
    let mut b = HttpRequest::post("/ingest/probe");
    if let Some(a) = auth {
        b = b.header("authorization", format!("Bearer {a}"));
    }
    if let Some(e) = encoding {
        b = b.header("content-encoding", e);
    }
    b.body(body.into()).unwrap()
}

#[tokio::test]
async fn cluster_comes_from_the_token() {
    let probe = Arc::new(Probe::default());
    let app = router(probe.clone(), tokens(), PushLimits::default());
    let r = app
        .clone()
        .oneshot(post("x", Some("token-for-cluster-b"), None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(probe.got.lock().unwrap()[0].0, "b");
    let r = app
        .clone()
        .oneshot(post("x", Some("wrong"), None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.oneshot(post("x", None, None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(probe.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn oversize_bodies_get_413_declared_or_streamed() {
    let probe = Arc::new(Probe::default());
    let limits = PushLimits {
        max_body_bytes: 100,
        ..Default::default()
    };
    let app = router(probe.clone(), TokenMap::open("d"), limits);
    let r = app
        .clone()
        .oneshot(post(vec![b'x'; 101], None, None))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A gzip bomb: small on the wire, large inflated.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &[b'a'; 1000]).unwrap();
    let gz = enc.finish().unwrap();
    assert!(
        gz.len() < 100,
        "the compressed body itself must fit the limit"
    );
    let r = app.oneshot(post(gz, None, Some("gzip"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(probe.got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn gzip_is_undone_and_corrupt_gzip_is_400() {
    let probe = Arc::new(Probe::default());
    let app = router(probe.clone(), TokenMap::open("d"), PushLimits::default());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, b"hello").unwrap();
    let gz = enc.finish().unwrap();
    let r = app
        .clone()
        .oneshot(post(gz.clone(), None, Some("gzip")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(probe.got.lock().unwrap()[0].1, b"hello");
    let r = app
        .clone()
        .oneshot(post(gz[..gz.len() / 2].to_vec(), None, Some("gzip")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = app.oneshot(post("x", None, Some("br"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(probe.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_full_queue_pushes_back_with_retry_after() {
    let gate = Arc::new(Notify::new());
    let probe = Arc::new(Probe {
        block: Some(gate.clone()),
        ..Default::default()
    });
    let limits = PushLimits {
        max_in_flight: 1,
        retry_after_secs: 7,
        ..Default::default()
    };
    let app = router(probe.clone(), TokenMap::open("d"), limits);
    let first = tokio::spawn(app.clone().oneshot(post("1", None, None)));
    // Wait until the first request holds the only slot.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let r = app.clone().oneshot(post("2", None, None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    gate.notify_one();
    assert_eq!(
        first.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // The slot is free again: the retry is accepted.
    gate.notify_one();
    let r = app.oneshot(post("2", None, None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let got = probe.got.lock().unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn an_unavailable_store_is_503_with_retry_after() {
    let probe = Arc::new(Probe::default());
    *probe.fail.lock().unwrap() = Some(kube_insight_store::Error::Unavailable("disk full".into()));
    let app = router(probe.clone(), TokenMap::open("d"), PushLimits::default());
    let r = app.oneshot(post("x", None, None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert!(probe.got.lock().unwrap().is_empty());
}
