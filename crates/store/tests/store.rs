//! The store's contract, run against every backend: SQLite always, and
//! PostgreSQL when `DROVER_TEST_POSTGRES_URL` is set (otherwise those tests
//! are reported as ignored, with the reason).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use common::Fixture;
use drover_store::{Event, EventType, ListOptions, Op, Store, StoreError, StoreOptions};
use futures::StreamExt;
use tokio::sync::Mutex;

/// Generates `sqlite::NAME` and `postgres::NAME` for each case.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::common::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(drover_pg), ignore = "DROVER_TEST_POSTGRES_URL is unset: PostgreSQL not tested")]
                async fn $name() {
                    super::$name(super::common::postgres().await).await;
                }
            )*
        }
    };
}

store_tests!(
    create_get_update_delete,
    bad_keys_are_refused,
    list_pages_at_one_revision,
    concurrent_compare_and_swap_loses_nothing,
    watch_sees_every_change_once_in_order,
    watch_from_the_past_catches_up_then_follows,
    compaction_makes_old_revisions_too_old,
    watch_sees_writes_from_another_process,
    killed_writer_leaves_only_whole_objects,
    create_all_is_all_or_nothing,
    txn_is_all_or_nothing_and_its_conditions_hold,
    txn_conditions_hold_against_racing_writers,
    a_mirror_follows_its_prefix,
    a_snapshot_under_writes_is_exactly_one_revision,
    a_load_commits_whole_or_not_at_all,
    compaction_stops_at_its_ceiling,
);

async fn create_get_update_delete(f: Fixture) {
    let s = &f.store;
    let a = s.create("/t/a", "one").await.unwrap();
    assert_eq!(a.create_revision, a.mod_revision);
    assert!(matches!(
        s.create("/t/a", "dup").await,
        Err(StoreError::AlreadyExists(_))
    ));

    let got = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(got, a);

    let b = s.update("/t/a", "two", a.mod_revision).await.unwrap();
    assert!(b.mod_revision > a.mod_revision);
    assert_eq!(b.create_revision, a.create_revision);
    match s.update("/t/a", "stale", a.mod_revision).await {
        Err(StoreError::Conflict {
            current, expected, ..
        }) => {
            assert_eq!(current, b.mod_revision);
            assert_eq!(expected, a.mod_revision);
        }
        other => panic!("stale update: {other:?}"),
    }
    assert_eq!(&s.get("/t/a").await.unwrap().unwrap().value[..], b"two");

    assert!(matches!(
        s.delete("/t/a", Some(a.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    let gone = s.delete("/t/a", Some(b.mod_revision)).await.unwrap();
    assert_eq!(&gone.value[..], b"two", "delete returns the last value");
    assert!(gone.mod_revision > b.mod_revision);
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    assert!(matches!(
        s.update("/t/a", "x", gone.mod_revision).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete("/t/a", None).await,
        Err(StoreError::NotFound(_))
    ));

    let again = s.create("/t/a", "three").await.unwrap();
    assert_eq!(
        again.create_revision, again.mod_revision,
        "a re-created key starts afresh"
    );
    assert_eq!(s.revisions().await.unwrap().current, again.mod_revision);
}

async fn bad_keys_are_refused(f: Fixture) {
    let s = &f.store;
    let before = s.revisions().await.unwrap();
    for key in ["", "has space", "ünïcode", "nul\0"] {
        assert!(
            matches!(s.create(key, "v").await, Err(StoreError::InvalidKey(_))),
            "{key:?}"
        );
    }
    assert_eq!(s.revisions().await.unwrap(), before, "nothing was written");
}

async fn list_pages_at_one_revision(f: Fixture) {
    let s = &f.store;
    for i in 0..25 {
        s.create(&format!("/l/a/{i:02}"), format!("v{i}"))
            .await
            .unwrap();
    }
    s.create("/l/b/00", "other prefix").await.unwrap();
    s.create("/l/a", "not under /l/a/").await.unwrap();

    let page = |after: Option<String>, revision| ListOptions {
        prefix: "/l/a/".into(),
        start_after: after,
        limit: Some(10),
        revision,
    };
    let p1 = s.list(&page(None, None)).await.unwrap();
    assert_eq!(p1.items.len(), 10);
    assert!(p1.more);
    assert_eq!(p1.items[0].key, "/l/a/00");

    // Changes after the first page must not show in later pages.
    let k24 = s.get("/l/a/24").await.unwrap().unwrap();
    s.update("/l/a/24", "changed", k24.mod_revision)
        .await
        .unwrap();
    s.delete("/l/a/15", None).await.unwrap();
    s.create("/l/a/99", "new").await.unwrap();

    let p2 = s
        .list(&page(Some(p1.items[9].key.clone()), Some(p1.revision)))
        .await
        .unwrap();
    let p3 = s
        .list(&page(Some(p2.items[9].key.clone()), Some(p1.revision)))
        .await
        .unwrap();
    assert!(p2.more);
    assert!(!p3.more);
    assert_eq!(p2.revision, p1.revision);
    let keys: Vec<_> = p1
        .items
        .iter()
        .chain(&p2.items)
        .chain(&p3.items)
        .map(|kv| kv.key.clone())
        .collect();
    let expected: Vec<_> = (0..25).map(|i| format!("/l/a/{i:02}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(&p3.items.last().unwrap().value[..], b"v24");

    let now = s
        .list(&ListOptions {
            prefix: "/l/a/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(now.items.len(), 25);
    assert!(now.items.iter().all(|kv| kv.key != "/l/a/15"));
    assert!(now.revision > p1.revision);
}

async fn concurrent_compare_and_swap_loses_nothing(f: Fixture) {
    const WRITERS: usize = 16;
    const INCREMENTS: usize = 20;
    let store = f.store.clone();
    store.create("/cas/counter", "0").await.unwrap();
    let wins = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        let wins = wins.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < INCREMENTS {
                let cur = store.get("/cas/counter").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                match store
                    .update("/cas/counter", (n + 1).to_string(), cur.mod_revision)
                    .await
                {
                    Ok(kv) => {
                        wins.lock().await.push((kv.mod_revision, n + 1));
                        done += 1;
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("update failed: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (WRITERS * INCREMENTS) as u64;
    let last = store.get("/cas/counter").await.unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&last.value).unwrap(),
        total.to_string(),
        "an update was lost"
    );
    let mut wins = wins.lock().await.clone();
    let revisions: HashSet<_> = wins.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions.len(),
        wins.len(),
        "two writers won the same revision"
    );
    wins.sort();
    let values: Vec<_> = wins.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        values,
        (1..=total).collect::<Vec<_>>(),
        "winners in revision order count 1..N"
    );
}

/// Collect `n` events from a watch, failing after a few seconds.
async fn take(
    watch: &mut futures::stream::BoxStream<'static, drover_store::Result<Event>>,
    n: usize,
) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
        match next {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", out.len()),
            Ok(None) => panic!("watch ended after {} events", out.len()),
            Err(_) => panic!("timed out with {} of {n} events", out.len()),
        }
    }
    out
}

/// Nothing more arrives within a short while.
async fn assert_quiet(
    watch: &mut futures::stream::BoxStream<'static, drover_store::Result<Event>>,
) {
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(700), watch.next()).await {
        panic!("unexpected extra event {e:?}");
    }
}

async fn watch_sees_every_change_once_in_order(f: Fixture) {
    let s = f.store.clone();
    let start = s.revisions().await.unwrap().current;
    let mut w = s.watch("/w/", start);
    // Writers under and outside the prefix, concurrently.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let key = format!("/w/{t}/{i}");
                let kv = s.create(&key, "a").await.unwrap();
                s.update(&key, "b", kv.mod_revision).await.unwrap();
                s.create(&format!("/x/{t}/{i}"), "elsewhere").await.unwrap();
                if i % 5 == 0 {
                    s.delete(&key, None).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected_n = 4 * (25 * 2 + 5);
    let events = take(&mut w, expected_n).await;
    assert_quiet(&mut w).await;
    let revs: Vec<_> = events.iter().map(|e| e.revision()).collect();
    assert!(
        revs.windows(2).all(|p| p[0] < p[1]),
        "events out of order or repeated"
    );
    assert!(events.iter().all(|e| e.kv.key.starts_with("/w/")));
    // The watch agrees with the log read back independently.
    let mut replay = s.watch("/w/", start);
    let again = take(&mut replay, expected_n).await;
    assert_eq!(events, again);
    let kinds = |k| events.iter().filter(|e| e.kind == k).count();
    assert_eq!(
        (
            kinds(EventType::Added),
            kinds(EventType::Modified),
            kinds(EventType::Deleted)
        ),
        (100, 100, 20)
    );
    let deleted = events
        .iter()
        .find(|e| e.kind == EventType::Deleted)
        .unwrap();
    assert_eq!(
        &deleted.kv.value[..],
        b"b",
        "a deletion carries the last value"
    );
}

async fn watch_from_the_past_catches_up_then_follows(f: Fixture) {
    let s = &f.store;
    let first = s.create("/p/0", "0").await.unwrap();
    for i in 1..600 {
        s.create(&format!("/p/{i}"), "v").await.unwrap();
    }
    // From the revision of the first write: 599 past events, then live ones.
    let mut w = s.watch("/p/", first.mod_revision);
    let past = take(&mut w, 599).await;
    assert_eq!(past[0].kv.key, "/p/1");
    let live = s.create("/p/live", "now").await.unwrap();
    let next = take(&mut w, 1).await;
    assert_eq!(next[0].kv, live);
    assert_quiet(&mut w).await;
}

async fn compaction_makes_old_revisions_too_old(f: Fixture) {
    let s = &f.store;
    let a = s.create("/c/a", "1").await.unwrap();
    let a2 = s.update("/c/a", "2", a.mod_revision).await.unwrap();
    s.create("/c/b", "b").await.unwrap();
    s.delete("/c/b", None).await.unwrap();
    let a3 = s.update("/c/a", "3", a2.mod_revision).await.unwrap();
    let current = s.revisions().await.unwrap().current;

    let compacted = s.compact(1).await.unwrap();
    assert_eq!(compacted, current - 1);
    assert_eq!(
        s.compact(1).await.unwrap(),
        compacted,
        "compaction is idempotent"
    );

    let mut old = s.watch("/c/", a.mod_revision);
    match tokio::time::timeout(Duration::from_secs(5), old.next())
        .await
        .unwrap()
    {
        Some(Err(StoreError::TooOld {
            requested,
            compacted: c,
        })) => {
            assert_eq!(requested, a.mod_revision);
            assert_eq!(c, compacted);
        }
        other => panic!("expected TooOld, got {other:?}"),
    }
    let old_list = ListOptions {
        prefix: "/c/".into(),
        revision: Some(a2.mod_revision),
        ..Default::default()
    };
    assert!(matches!(
        s.list(&old_list).await,
        Err(StoreError::TooOld { .. })
    ));

    // The present is intact, and watching from the compacted revision works.
    let now = s
        .list(&ListOptions {
            prefix: "/c/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(now.items, vec![a3.clone()]);
    let mut w = s.watch("/c/", compacted);
    assert_eq!(take(&mut w, 1).await[0].kv, a3);
}

/// Helper process for the cross-process tests. Modes:
/// `write N`: write N objects `/xp/{i}` then exit; `loop`: write forever
/// (until killed), printing each committed revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for the cross-process tests; they run it"]
async fn child_writer() {
    let url = std::env::var("DROVER_CHILD_URL").expect("run by the cross-process tests");
    let mode = std::env::var("DROVER_CHILD_MODE").unwrap();
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    if let Some(n) = mode.strip_prefix("write ") {
        for i in 0..n.parse::<usize>().unwrap() {
            store
                .create(&format!("/xp/{i:04}"), format!("from child {i}"))
                .await
                .unwrap();
        }
    } else {
        let mut i = 0u64;
        loop {
            let payload = "x".repeat(1000 + (i as usize * 7919) % 200_000);
            let value = serde_json::json!({ "seq": i, "len": payload.len(), "payload": payload });
            let key = format!("/crash/{}", i % 50);
            let kv = match store.get(&key).await.unwrap() {
                Some(cur) => store
                    .update(&key, value.to_string(), cur.mod_revision)
                    .await
                    .unwrap(),
                None => store.create(&key, value.to_string()).await.unwrap(),
            };
            println!("committed {}", kv.mod_revision);
            i += 1;
        }
    }
    store.close().await;
}

async fn watch_sees_writes_from_another_process(f: Fixture) {
    let start = f.store.revisions().await.unwrap().current;
    let mut w = f.store.watch("/xp/", start);
    let mut child = common::spawn_child(
        "child_writer",
        &[
            ("DROVER_CHILD_URL", &f.url),
            ("DROVER_CHILD_MODE", "write 40"),
        ],
    );
    let events = take(&mut w, 40).await;
    assert!(child.wait().unwrap().success());
    let keys: Vec<_> = events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(
        keys,
        (0..40).map(|i| format!("/xp/{i:04}")).collect::<Vec<_>>()
    );
    assert!(events.iter().all(|e| e.kind == EventType::Added));
    assert_quiet(&mut w).await;
}

async fn killed_writer_leaves_only_whole_objects(f: Fixture) {
    let url = f.url.clone();
    f.store.close().await;
    drop(f.store);
    let mut child = common::spawn_child(
        "child_writer",
        &[("DROVER_CHILD_URL", &url), ("DROVER_CHILD_MODE", "loop")],
    );
    // Kill it mid-stream once it has committed a good number of writes.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut last_committed = 0i64;
    let mut lines = stdout.lines();
    while last_committed < 150 {
        let line = lines.next().expect("child stopped writing").unwrap();
        if let Some(rev) = line.strip_prefix("committed ") {
            last_committed = rev.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = Store::open(&url, StoreOptions::default())
        .await
        .expect("the store reopens cleanly");
    let revs = store.revisions().await.unwrap();
    assert!(revs.current >= last_committed, "a committed write was lost");
    let all = store
        .list(&ListOptions {
            prefix: "/crash/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 50);
    for kv in &all.items {
        let v: serde_json::Value = serde_json::from_slice(&kv.value).expect("a torn object");
        assert_eq!(
            v["payload"].as_str().unwrap().len() as u64,
            v["len"].as_u64().unwrap()
        );
        assert!(kv.mod_revision <= revs.current);
    }
    // And it takes writes again.
    let kv = store.get("/crash/0").await.unwrap().unwrap();
    store
        .update("/crash/0", "{}", kv.mod_revision)
        .await
        .unwrap();
}

async fn create_all_is_all_or_nothing(f: Fixture) {
    let s = &f.store;
    s.create("/b/exists", "x").await.unwrap();
    let before = s.revisions().await.unwrap();
    let err = s
        .create_all(&[("/b/new1", "1"), ("/b/exists", "2"), ("/b/new2", "3")])
        .await;
    assert!(matches!(err, Err(StoreError::AlreadyExists(k)) if k == "/b/exists"));
    assert_eq!(
        s.revisions().await.unwrap(),
        before,
        "a failed batch writes nothing"
    );
    assert_eq!(s.get("/b/new1").await.unwrap(), None);
    let kvs = s
        .create_all(&[("/b/new1", "1"), ("/b/new2", "2")])
        .await
        .unwrap();
    assert_eq!(kvs.len(), 2);
    assert_eq!(kvs[1].mod_revision, kvs[0].mod_revision + 1);
    assert_eq!(&s.get("/b/new2").await.unwrap().unwrap().value[..], b"2");
}

async fn txn_is_all_or_nothing_and_its_conditions_hold(f: Fixture) {
    let s = &f.store;
    let a = s.create("/x/a", "a1").await.unwrap();
    let b = s.create("/x/b", "b1").await.unwrap();

    // Every kind of failed step leaves the store as it was.
    type Expected = fn(&StoreError) -> bool;
    let failing: Vec<(Vec<Op>, Expected)> = vec![
        (
            vec![Op::create("/x/c", "c"), Op::create("/x/a", "dup")],
            |e| matches!(e, StoreError::AlreadyExists(k) if k == "/x/a"),
        ),
        (
            vec![
                Op::create("/x/c", "c"),
                Op::update("/x/b", "b2", a.mod_revision),
            ],
            |e| matches!(e, StoreError::Conflict { key, .. } if key == "/x/b"),
        ),
        (
            vec![
                Op::delete("/x/a", a.mod_revision),
                Op::delete("/x/missing", 1),
            ],
            |e| matches!(e, StoreError::NotFound(k) if k == "/x/missing"),
        ),
        (
            vec![Op::create("/x/c", "c"), Op::check("/x/a", None)],
            |e| matches!(e, StoreError::AlreadyExists(_)),
        ),
        (
            vec![
                Op::check("/x/b", Some(a.mod_revision)),
                Op::create("/x/c", "c"),
            ],
            |e| matches!(e, StoreError::Conflict { .. }),
        ),
        (
            vec![
                Op::create("/x/c", "c"),
                Op::Unchanged {
                    prefix: "/x/".into(),
                    since: a.mod_revision,
                },
            ],
            |e| matches!(e, StoreError::PrefixChanged { .. }),
        ),
    ];
    for (ops, expected) in failing {
        let before = s.revisions().await.unwrap();
        match s.txn(&ops).await {
            Err(e) => assert!(expected(&e), "{ops:?}: {e}"),
            Ok(kvs) => panic!("{ops:?} succeeded: {kvs:?}"),
        }
        assert_eq!(s.revisions().await.unwrap(), before, "{ops:?} wrote");
        assert_eq!(s.get("/x/c").await.unwrap(), None);
        assert_eq!(s.get("/x/a").await.unwrap().unwrap(), a);
    }

    // Live: the same object, whatever its updates; not one made again.
    let a2 = s.update("/x/a", "a1b", a.mod_revision).await.unwrap();
    assert!(s.txn(&[Op::live(&a)]).await.unwrap().is_empty());
    let gone = s.create("/x/gone", "g").await.unwrap();
    s.delete("/x/gone", None).await.unwrap();
    assert!(matches!(
        s.txn(&[Op::live(&gone), Op::create("/x/c", "c")]).await,
        Err(StoreError::NotFound(_))
    ));
    s.create("/x/gone", "again").await.unwrap();
    assert!(matches!(
        s.txn(&[Op::live(&gone), Op::create("/x/c", "c")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get("/x/c").await.unwrap(), None);
    let a = a2;
    let listed = s.revisions().await.unwrap().current;

    // Conditions that hold: writes land, one revision each, in order.
    let kvs = s
        .txn(&[
            Op::check("/x/a", Some(a.mod_revision)),
            Op::check("/x/none", None),
            Op::Unchanged {
                prefix: "/x/".into(),
                since: listed,
            },
            Op::update("/x/a", "a2", a.mod_revision),
            Op::delete("/x/b", b.mod_revision),
            Op::create("/x/c", "c"),
        ])
        .await
        .unwrap();
    assert_eq!(kvs.len(), 3);
    assert_eq!(kvs[1].mod_revision, kvs[0].mod_revision + 1);
    assert_eq!(kvs[2].mod_revision, kvs[1].mod_revision + 1);
    assert_eq!(&s.get("/x/a").await.unwrap().unwrap().value[..], b"a2");
    assert_eq!(s.get("/x/b").await.unwrap(), None);
    // Only conditions: nothing written, nothing bumped.
    let before = s.revisions().await.unwrap();
    assert!(s
        .txn(&[Op::check("/x/c", Some(kvs[2].mod_revision))])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.revisions().await.unwrap(), before);
    assert!(s.txn(&[]).await.unwrap().is_empty());
}

/// A transaction that lists a prefix, then writes on condition that the
/// prefix is unchanged, never misses a key another writer added meanwhile:
/// either its condition fails or the other write comes after it.
async fn txn_conditions_hold_against_racing_writers(f: Fixture) {
    let s = f.store.clone();
    let adders = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                s.create(&format!("/r/items/{i:03}"), "x").await.unwrap();
            }
        })
    };
    let mut sealed = 0;
    for round in 0..60 {
        let page = s
            .list(&ListOptions {
                prefix: "/r/items/".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let count = page.items.len().to_string();
        let result = s
            .txn(&[
                Op::Unchanged {
                    prefix: "/r/items/".into(),
                    since: page.revision,
                },
                Op::create(format!("/r/count/{round:03}"), count.clone()),
            ])
            .await;
        match result {
            Ok(kvs) => {
                sealed += 1;
                // Nothing under the prefix at or below the count's revision
                // was missing from the list.
                let at = s
                    .list(&ListOptions {
                        prefix: "/r/items/".into(),
                        revision: Some(kvs[0].mod_revision),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert_eq!(at.items.len().to_string(), count);
            }
            Err(StoreError::PrefixChanged { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    adders.await.unwrap();
    assert!(sealed > 0, "no transaction ever went through");
}

async fn a_mirror_follows_its_prefix(f: Fixture) {
    let s = f.store;
    s.create("/m/a", b"1".to_vec()).await.unwrap();
    s.create("/m/junk", b"not a number".to_vec()).await.unwrap();
    s.create("/other/x", b"9".to_vec()).await.unwrap();
    let parse = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u32>().ok();
    let (mirror, _task) = drover_store::Mirror::spawn(&s, "/m/", parse);
    assert!(mirror.ready(Duration::from_secs(5)).await);
    let names = |m: &drover_store::Mirror<u32>| -> Vec<(String, u32)> {
        m.items().into_iter().map(|(k, v, _)| (k, v)).collect()
    };
    // What cannot be parsed is left out; other prefixes are not there.
    assert_eq!(names(&mirror), vec![("/m/a".to_owned(), 1)]);

    let mut changes = mirror.changes();
    changes.borrow_and_update();
    let a = s.get("/m/a").await.unwrap().unwrap();
    let kvs = s
        .txn(&[
            Op::update("/m/a", b"2".to_vec(), a.mod_revision),
            Op::create("/m/b", b"3".to_vec()),
        ])
        .await
        .unwrap();
    assert!(
        mirror
            .caught_up(kvs[1].mod_revision, Duration::from_secs(5))
            .await
    );
    assert!(changes.has_changed().unwrap(), "subscribers learn of it");
    assert_eq!(mirror.get("/m/a"), Some((2, kvs[0].mod_revision)));
    assert_eq!(names(&mirror).len(), 2);

    let b = s.get("/m/b").await.unwrap().unwrap();
    let gone = s.txn(&[Op::delete("/m/b", b.mod_revision)]).await.unwrap();
    let at = gone
        .first()
        .map_or_else(|| b.mod_revision + 1, |kv| kv.mod_revision);
    assert!(mirror.caught_up(at, Duration::from_secs(5)).await);
    assert_eq!(mirror.get("/m/b"), None);
    assert!(mirror.revision() >= at);
}

/// Take a snapshot; returns its revision and rows.
async fn snapshot_of(store: &Store) -> (i64, Vec<drover_store::LogRow>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let reading = {
        let store = store.clone();
        tokio::spawn(async move { store.snapshot(7, tx).await })
    };
    let mut revision = -1;
    let mut rows = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            drover_store::Snapshot::Begin {
                revision: r,
                objects,
            } => {
                revision = r;
                rows.reserve(objects as usize);
            }
            drover_store::Snapshot::Rows(batch) => {
                // A slow reader: writes go on meanwhile.
                tokio::task::yield_now().await;
                rows.extend(batch);
            }
        }
    }
    reading.await.unwrap().unwrap();
    (revision, rows)
}

async fn a_snapshot_under_writes_is_exactly_one_revision(f: Fixture) {
    let s = &f.store;
    for i in 0..200 {
        s.create(&format!("/snap/k{i:04}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                let key = format!("/snap/k{:04}", i % 250);
                match s.get(&key).await.unwrap() {
                    Some(kv) if i % 3 == 0 => {
                        s.delete(&key, Some(kv.mod_revision)).await.ok();
                    }
                    Some(kv) => {
                        s.update(&key, format!("u{i}"), kv.mod_revision).await.ok();
                    }
                    None => {
                        s.create(&key, format!("c{i}")).await.ok();
                    }
                }
            }
        })
    };
    let (revision, rows) = snapshot_of(s).await;
    writer.await.unwrap();
    // Exactly what a list at that revision holds, no more, no fewer.
    let listed = s
        .list(&ListOptions {
            prefix: "/".into(),
            revision: Some(revision),
            ..Default::default()
        })
        .await
        .unwrap();
    let want: Vec<(String, Vec<u8>, i64)> = listed
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.to_vec(), kv.mod_revision))
        .collect();
    let got: Vec<(String, Vec<u8>, i64)> = rows
        .iter()
        .map(|r| (r.key.clone(), r.value.to_vec(), r.revision))
        .collect();
    assert_eq!(got, want, "snapshot at revision {revision}");
    assert!(rows.iter().all(|r| !r.deleted && r.revision <= revision));
}

async fn a_load_commits_whole_or_not_at_all(f: Fixture) {
    let s = &f.store;
    for i in 0..50 {
        s.create(&format!("/load/k{i:03}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let (revision, rows) = snapshot_of(s).await;
    let log = s.log_since(0, 1000).await.unwrap();
    assert_eq!(log.len() as i64, revision, "every write is in the log");
    assert!(log.windows(2).all(|w| w[0].revision + 1 == w[1].revision));
    assert!(log.iter().all(|r| r.at_micros > 0));

    // Into a non-empty store: refused.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(drover_store::Load::Rows(rows.clone()))
        .await
        .unwrap();
    drop(tx);
    assert!(matches!(
        s.load(false, rx).await,
        Err(StoreError::NotEmpty { objects: 50, .. })
    ));

    // An abandoned load writes nothing.
    let target = common::sqlite().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(drover_store::Load::Rows(rows[..20].to_vec()))
        .await
        .unwrap();
    drop(tx);
    assert!(matches!(
        target.store.load(false, rx).await,
        Err(StoreError::LoadAborted)
    ));
    assert!(target.store.contents().await.unwrap().is_empty());

    // A whole one keeps revisions, and history before the snapshot is gone.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(drover_store::Load::Rows(rows.clone()))
        .await
        .unwrap();
    tx.send(drover_store::Load::Commit {
        revision,
        compacted: revision,
    })
    .await
    .unwrap();
    let after = target.store.load(false, rx).await.unwrap();
    assert_eq!((after.revision, after.objects), (revision, 50));
    let kv = target.store.get("/load/k007").await.unwrap().unwrap();
    let original = s.get("/load/k007").await.unwrap().unwrap();
    assert_eq!(kv, original);
    assert!(matches!(
        target.store.log_since(0, 10).await,
        Err(StoreError::TooOld { .. })
    ));
    // And the store goes on from there.
    let next = target.store.create("/load/new", "n").await.unwrap();
    assert_eq!(next.mod_revision, revision + 1);
}

async fn compaction_stops_at_its_ceiling(f: Fixture) {
    let s = &f.store;
    let kv = s.create("/ceil/k", "0").await.unwrap();
    let mut rev = kv.mod_revision;
    for i in 1..20 {
        rev = s
            .update("/ceil/k", format!("{i}"), rev)
            .await
            .unwrap()
            .mod_revision;
    }
    let ceiling = kv.mod_revision + 5;
    assert_eq!(s.compact_at_most(0, Some(ceiling)).await.unwrap(), ceiling);
    // Everything after the ceiling is still in the log.
    let rows = s.log_since(ceiling, 100).await.unwrap();
    assert_eq!(rows.len() as i64, rev - ceiling);
    assert_eq!(s.compact_at_most(0, None).await.unwrap(), rev);
}
