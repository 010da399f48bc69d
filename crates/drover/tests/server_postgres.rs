//! `drover server` on PostgreSQL: replicas share one CA and one admin, and
//! health follows the datastore. Reported as ignored without
//! `DROVER_TEST_POSTGRES_URL`.

mod common;

use std::time::{Duration, Instant};

use common::{curl, printed_password, save_ca, Proxy, Server};

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn replicas_share_one_ca_and_one_admin() {
    let db = common::postgres_database().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // Both replicas start at once on the fresh database.
    let [a, b] = std::thread::scope(|s| {
        let handles = dirs.each_ref().map(|d| {
            let db = db.clone();
            s.spawn(move || Server::start(d.path(), &["--datastore", &db], &[]))
        });
        handles.map(|h| h.join().unwrap())
    });
    let (ca, pem) = save_ca(&a, dirs[0].path());
    let ca = ca.to_str().unwrap();
    assert_eq!(
        curl(&["--cacert", ca], &b.url("/cacerts")).1,
        pem,
        "both replicas serve the same CA"
    );
    assert_eq!(curl(&["--cacert", ca], &a.url("/ping")).1, "pong");
    assert_eq!(curl(&["--cacert", ca], &b.url("/ping")).1, "pong");
    let (code, health) = curl(&["--cacert", ca], &b.url("/healthz"));
    assert_eq!(code, 200);
    assert!(health.contains(r#""backend":"postgres""#), "{health}");

    let printed: Vec<_> = [&a, &b]
        .iter()
        .filter_map(|s| printed_password(s))
        .collect();
    assert_eq!(printed.len(), 1, "exactly one replica created the admin");
    let hash = {
        let store = drover_store::Store::open(&db, Default::default())
            .await
            .unwrap();
        let kv = store.get("/drover/passwords/admin").await.unwrap().unwrap();
        String::from_utf8(kv.value.to_vec()).unwrap()
    };
    assert!(drover_auth::password::verify(&printed[0], &hash));

    assert!(a.stop().0.success());
    let a = Server::start(dirs[0].path(), &["--datastore", &db], &[]);
    assert_eq!(
        curl(&["--cacert", ca], &a.url("/cacerts")).1,
        pem,
        "same CA after a restart"
    );
    assert_eq!(printed_password(&a), None);
    drop((a, b));
    let store = drover_store::Store::open(&db, Default::default())
        .await
        .unwrap();
    let kv = store.get("/drover/passwords/admin").await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(kv.value.to_vec()).unwrap(),
        hash,
        "the admin's hash is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(drover_pg),
    ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested"
)]
async fn health_follows_the_datastore() {
    let db = url::Url::parse(&common::postgres_database().await).unwrap();
    let target = format!("{}:{}", db.host_str().unwrap(), db.port().unwrap_or(5432));
    let proxy = Proxy::start(target).await;
    let mut via_proxy = db.clone();
    via_proxy.set_port(Some(proxy.port)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--datastore", via_proxy.as_str()], &[]);
    let (ca, _) = save_ca(&server, dir.path());
    let ca = ca.to_str().unwrap().to_owned();
    let health = |server: &Server| {
        curl(
            &["--cacert", &ca, "--max-time", "10"],
            &server.url("/healthz"),
        )
    };
    assert_eq!(health(&server).0, 200);

    proxy.cut();
    let (code, body) = health(&server);
    assert_eq!(code, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["datastore"]["status"], "unavailable");
    assert_eq!(
        curl(&["--cacert", &ca], &server.url("/ping")).1,
        "pong",
        "the server itself stays up"
    );

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&server).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "health did not recover:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
