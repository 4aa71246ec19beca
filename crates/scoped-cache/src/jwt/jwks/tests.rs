use super::*;

#[test]
fn intervals_must_be_ordered() {
    let build = |min, every, stale| {
        JwksSource::url("https://idp.example/jwks.json")
            .min_refresh_interval(Duration::from_secs(min))
            .refresh_interval(Duration::from_secs(every))
            .max_stale(Duration::from_secs(stale))
            .build()
    };
    assert!(build(10, 60, 3600).is_ok());
    assert!(matches!(
        build(61, 60, 3600),
        Err(BuildError::InvalidInterval)
    ));
    assert!(matches!(
        build(10, 60, 59),
        Err(BuildError::InvalidInterval)
    ));
    assert!(matches!(
        JwksSource::url("ftp://idp.example/jwks.json").build(),
        Err(BuildError::InvalidUrl(_))
    ));
}

#[test]
fn durations_beyond_their_maximum_are_refused() {
    let base = || JwksSource::url("https://idp.example/jwks.json");
    let day = Duration::from_secs(24 * 60 * 60);
    let cases = [
        ("fetch_timeout", base().fetch_timeout(Duration::MAX)),
        (
            "fetch_timeout",
            base().fetch_timeout(Duration::from_secs(5 * 60 + 1)),
        ),
        ("refresh_interval", base().refresh_interval(Duration::MAX)),
        (
            "min_refresh_interval",
            base().min_refresh_interval(Duration::MAX),
        ),
        ("max_stale", base().max_stale(Duration::MAX)),
        ("max_stale", base().max_stale(day * 366)),
    ];
    for (name, builder) in cases {
        match builder.build() {
            Err(BuildError::DurationTooLong { field, .. }) => assert_eq!(field, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    // The maximums themselves are accepted.
    let longest = base()
        .fetch_timeout(Duration::from_secs(5 * 60))
        .min_refresh_interval(day * 365)
        .refresh_interval(day * 365)
        .max_stale(day * 365)
        .build();
    assert!(longest.is_ok(), "{longest:?}");
}

#[test]
fn spawning_a_refresh_on_a_shut_down_runtime_does_not_deadlock() {
    // Built outside a runtime: no refresher yet.
    let source = JwksSource::url("http://127.0.0.1:9/jwks.json")
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    // A runtime that has shut down drops a task spawned on it at once, inside `spawn`;
    // the fetch's guard then takes the state lock.
    drop(runtime);
    let (done, outcome) = std::sync::mpsc::channel();
    let inner = Arc::clone(&source.inner);
    std::thread::spawn(move || {
        let _entered = handle.enter();
        inner.ensure_started();
        let attempt = inner.start_refresh(Cause::Forced).map(|attempt| attempt.id);
        let ended = inner.lock_state().last_outcome.clone();
        let _ = done.send((attempt, ended.map(|(id, _)| id)));
    });
    let (attempt, ended) = outcome
        .recv_timeout(Duration::from_secs(10))
        .expect("a spawn under the state lock deadlocked");
    // The attempt was started and, its task dropped, ended at once.
    assert_eq!(attempt, Some(1));
    assert_eq!(ended, Some(1));
}

#[test]
fn a_fetch_cancelled_by_runtime_shutdown_does_not_wedge_the_source() {
    // A provider that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", silent.local_addr().unwrap());
    let source = JwksSource::url(url)
        .fetch_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    first.block_on(async {
        // Start a fetch and leave it in flight.
        let _ = tokio::time::timeout(Duration::from_millis(50), source.refresh_now()).await;
    });
    drop(first);
    // The dropped fetch ended its attempt; a new runtime gets a fresh attempt whose own
    // outcome (a timeout) is reported, not a wait on the dead one.
    let outcome = runtime().block_on(source.refresh_now());
    assert!(
        matches!(outcome, Err(KeyFetchError::Transport(_))),
        "{outcome:?}"
    );
}
