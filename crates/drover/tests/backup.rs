//! Backups with real parts: `drover server` processes, moto's S3 server
//! (PyPI), PostgreSQL, the `drover backup` CLI, and a sim imported through
//! a real agent that must reconnect to the restored server on its own.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Mgmt, MGMT};
use serde_json::{json, Value};

/// `drover backup …` with this environment; (code, stdout, stderr).
fn backup_cli(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("backup").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Create a Backup and wait until its first attempt is over; returns it.
fn backup_now(m: &Mgmt, admin: &str, name: &str, spec: Value) -> Value {
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/backups"),
        Some(admin),
        Some(
            &json!({"apiVersion": "management.drover.io/v1", "kind": "Backup",
            "metadata": {"name": name}, "spec": spec}),
        ),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let b = common::wait(&format!("backup {name}"), Duration::from_secs(60), || {
        let (_, b) = m.http(
            "GET",
            &format!("{MGMT}/backups/{name}"),
            Some(admin),
            None,
            &[],
        );
        (!common::condition(&b, "Ready").is_empty()).then_some(b)
    });
    assert_eq!(common::condition(&b, "Ready"), "True", "{b}");
    b
}

fn global_role(name: &str) -> Value {
    json!({"apiVersion": "management.drover.io/v1", "kind": "GlobalRole",
        "metadata": {"name": name}, "rules": []})
}

/// The names of the GlobalRoles whose names start with `prefix`.
fn roles(m: &Mgmt, admin: &str, prefix: &str) -> BTreeSet<String> {
    let (code, list) = m.http(
        "GET",
        &format!("{MGMT}/globalroles"),
        Some(admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn file_of(backup: &Value) -> (String, i64) {
    let f = backup["status"]["files"]
        .as_array()
        .and_then(|f| f.last())
        .unwrap_or_else(|| panic!("no file in {backup}"));
    (
        f["name"].as_str().unwrap().to_owned(),
        f["revision"].as_i64().unwrap(),
    )
}

#[test]
fn a_backup_under_writes_restores_exactly_the_objects_at_its_revision() {
    let m = Mgmt::start(&[]);
    let admin = m.admin();
    // A writer loop creates GlobalRoles and notes each acknowledged one
    // with the revision the server answered.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let (port, ca, admin) = (m.server.port, m.ca.clone(), admin.clone());
        std::thread::spawn(move || {
            for i in 0..2000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("w-{i:05}");
                let out = Command::new("curl")
                    .args(["-sS", "--cacert"])
                    .arg(&ca)
                    .args(["-H", &format!("Authorization: Bearer {admin}")])
                    .args(["-H", "Content-Type: application/json", "--data-binary"])
                    .arg(global_role(&name).to_string())
                    .arg(format!("https://127.0.0.1:{port}{MGMT}/globalroles"))
                    .output()
                    .unwrap();
                let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
                    acked.lock().unwrap().push((name, rv.parse().unwrap()));
                }
            }
        })
    };
    common::wait("the writer under way", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 30).then_some(())
    });
    let backup = backup_now(&m, &admin, "under-writes", json!({}));
    // Writes go on after the backup too.
    let after = acked.lock().unwrap().len();
    common::wait("writes after the backup", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= after + 30).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let (file, revision) = file_of(&backup);
    let acked = acked.lock().unwrap().clone();
    let before: BTreeSet<String> = acked
        .iter()
        .filter(|(_, rv)| *rv <= revision)
        .map(|(n, _)| n.clone())
        .collect();
    let later = acked.iter().filter(|(_, rv)| *rv > revision).count();
    assert!(
        !before.is_empty() && later > 0,
        "the backup fell between writes: {} before, {later} after",
        before.len()
    );

    let path = m.dir.path().join("data/backups").join(&file);
    let restored_dir = m.dir.path().join("restored");
    let (code, out, err) = backup_cli(
        &[
            "restore",
            path.to_str().unwrap(),
            "--data-dir",
            restored_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let restored = common::Server::start(&restored_dir, &[], &[]);
    let r = Mgmt::attach(restored, m.ca.clone());
    // The admin's token from before the backup works on the restored server.
    let got = roles(&r, &admin, "w-");
    let missing: Vec<_> = before.difference(&got).collect();
    let extra: Vec<_> = got.difference(&before).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "backup at revision {revision}: missing {missing:?}, extra {extra:?}"
    );
    eprintln!(
        "backup at revision {revision}: {} objects written before it restored, {later} after it absent",
        before.len()
    );
}

/// A key file for backups.
fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("backup.key");
    std::fs::write(
        &path,
        "a backup key of more than thirty-two bytes for the tests",
    )
    .unwrap();
    path
}

/// What a user checks after a migration: the agent reconnects without a
/// re-import and kubectl through the proxy works; the old admin token
/// works; a user's login works.
fn check_restored_server(m: &Mgmt, admin: &str, cluster: &str, kubeconfig: &Path) {
    let (code, _) = m.http("GET", &format!("{MGMT}/users"), Some(admin), None, &[]);
    assert_eq!(code, 200, "the admin's old token");
    m.login("bob", "bob has a long password");
    common::wait_ready(m, admin, cluster, Duration::from_secs(60));
    let (code, out, err) = common::kubectl(m, kubeconfig, &["get", "nodes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Ready"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    any(not(drover_pg), not(drover_moto)),
    ignore = "needs DROVER_TEST_POSTGRES_URL and DROVER_TEST_MOTO (./scripts/test sets both)"
)]
async fn sqlite_to_postgres_through_encrypted_s3_and_back() {
    let s3 = common::S3::start("drover-migrate");
    let env = s3.env();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let key_arg = key.to_str().unwrap().to_owned();
    let server_env: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain([("DROVER_BOOTSTRAP_PASSWORD", common::ADMIN_PASSWORD)])
        .collect();
    let mut m = Mgmt::start_env(&["--backup-encryption-key-file", &key_arg], &server_env);
    let admin = m.admin();
    m.user(&admin, "bob");
    let sim = common::SimProc::start(m.dir.path(), "migrated", 1);
    let imp = common::import(&m, &admin, &sim, "migrated");
    let _agent = common::agent(&m, &imp, &common::ca_checksum(&m));
    common::wait_ready(&m, &admin, &imp.cluster, Duration::from_secs(60));
    let kubeconfig = common::user_kubeconfig(&m, &admin, &imp.cluster, "admin");

    // SQLite → S3, encrypted.
    let b = backup_now(
        &m,
        &admin,
        "to-pg",
        json!({"location": "s3://drover-migrate/sqlite", "encrypt": true}),
    );
    let (file, _) = file_of(&b);
    assert_eq!(s3.keys("sqlite/"), [format!("sqlite/{file}")]);
    let url = format!("s3://drover-migrate/sqlite/{file}");
    // Without the key the file is useless.
    let (code, _, err) = backup_cli(&["verify", &url], &env);
    assert_ne!(code, 0);
    assert!(err.contains("encrypted"), "{err}");

    // → PostgreSQL; the server on it keeps the URL, CA and tokens.
    let db = common::postgres_database().await;
    let (code, out, err) = backup_cli(
        &["restore", &url, "--datastore", &db, "--key-file", &key_arg],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let pg_dir = dir.path().join("pg-replica");
    m.replace(
        &pg_dir,
        &["--datastore", &db, "--backup-encryption-key-file", &key_arg],
        &server_env,
    );
    check_restored_server(&m, &admin, &imp.cluster, &kubeconfig);
    assert!(
        m.server.log().contains("postgres"),
        "the server runs on PostgreSQL: {}",
        m.server.log()
    );

    // And back: PostgreSQL → S3 → SQLite.
    let b = backup_now(
        &m,
        &admin,
        "to-sqlite",
        json!({"location": "s3://drover-migrate/pg", "encrypt": true}),
    );
    let (file, _) = file_of(&b);
    let url = format!("s3://drover-migrate/pg/{file}");
    let sqlite_dir = dir.path().join("sqlite-again");
    let (code, out, err) = backup_cli(
        &[
            "restore",
            &url,
            "--data-dir",
            sqlite_dir.to_str().unwrap(),
            "--key-file",
            &key_arg,
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    m.replace(
        &sqlite_dir,
        &["--backup-encryption-key-file", &key_arg],
        &server_env,
    );
    check_restored_server(&m, &admin, &imp.cluster, &kubeconfig);

    // A non-empty target is refused, and nothing is written to it.
    let before = pg_contents(&db).await;
    let (code, _, err) = backup_cli(
        &["restore", &url, "--datastore", &db, "--key-file", &key_arg],
        &env,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(pg_contents(&db).await, before);
}

/// The newest revision and the number of log rows of a PostgreSQL
/// datastore.
async fn pg_contents(url: &str) -> (i64, i64) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as("SELECT (SELECT revision FROM drover_meta), (SELECT COUNT(*) FROM drover_log)")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[test]
#[cfg_attr(
    not(drover_moto),
    ignore = "needs DROVER_TEST_MOTO (./scripts/test sets it)"
)]
fn a_schedule_of_every_minute_with_retention_two_keeps_two_files_in_s3() {
    let s3 = common::S3::start("drover-scheduled");
    let env = s3.env();
    let server_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let m = Mgmt::start_env(&[], &server_env);
    let admin = m.admin();
    let (code, body) = m.http(
        "POST",
        &format!("{MGMT}/backups"),
        Some(&admin),
        Some(&json!({"apiVersion": "management.drover.io/v1", "kind": "Backup",
            "metadata": {"name": "minutely"},
            "spec": {"location": "s3://drover-scheduled/drover", "schedule": "* * * * *", "retentionCount": 2}})),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    // Three runs: the third deletes the first file.
    let mut seen = BTreeSet::new();
    let b = common::wait("three scheduled backups", Duration::from_secs(240), || {
        let (_, b) = m.http(
            "GET",
            &format!("{MGMT}/backups/minutely"),
            Some(&admin),
            None,
            &[],
        );
        if let Some(t) = b["status"]["lastBackupTime"].as_str() {
            seen.insert(t.to_owned());
        }
        (seen.len() >= 3).then_some(b)
    });
    let keys = s3.keys("drover/");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let files: Vec<String> = b["status"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("drover/{}", f["name"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, files, "the status lists what S3 holds");
    assert!(b["status"]["nextBackupTime"].is_string(), "{b}");
}

/// The segments of the log archive in `dir`: first and last revision,
/// path; in order.
fn segments(dir: &Path) -> Vec<(i64, i64, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    drover_backup::archive::parse_segment_name(&name)
                        .map(|(first, last)| (first, last, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The highest revision the log archive in `dir` holds.
fn archived(dir: &Path) -> i64 {
    segments(dir).last().map_or(0, |s| s.1)
}

#[test]
fn point_in_time_restore_has_what_was_there_at_that_time() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("log");
    let archive_url = format!("file://{}", archive.display());
    let m = Mgmt::start(&["--backup-log-archive", &archive_url]);
    let admin = m.admin();
    backup_now(&m, &admin, "base", json!({}));
    let create = |name: &str| {
        let (code, body) = m.http(
            "POST",
            &format!("{MGMT}/globalroles"),
            Some(&admin),
            Some(&global_role(name)),
            &[],
        );
        assert_eq!(code, 201, "{body}");
        body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let rv_a = create("pitr-a");
    common::wait("A archived", Duration::from_secs(30), || {
        (archived(&archive) >= rv_a).then_some(())
    });
    let t = drover_backup::rfc3339(SystemTime::now());
    // The times of writes are kept to the microsecond; T is in
    // milliseconds: the next write must come after it.
    common::wait("the clock past T", Duration::from_secs(5), || {
        (drover_backup::rfc3339(SystemTime::now()) > t).then_some(())
    });
    let (code, body) = m.http(
        "DELETE",
        &format!("{MGMT}/globalroles/pitr-a"),
        Some(&admin),
        None,
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let rv_b = create("pitr-b");
    common::wait("B archived", Duration::from_secs(30), || {
        (archived(&archive) >= rv_b).then_some(())
    });

    let backups = m.dir.path().join("data/backups");
    // `drover backup restore` of the newest backup before a time or
    // revision, replaying the archive, into a new data directory.
    let restore_to = |flag: &str, value: &str, target: &Path| {
        backup_cli(
            &[
                "restore",
                backups.to_str().unwrap(),
                flag,
                value,
                "--log-archive",
                &archive_url,
                "--data-dir",
                target.to_str().unwrap(),
            ],
            &[],
        )
    };
    let target = dir.path().join("restored");
    let (code, out, err) = restore_to("--to-time", &t, &target);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed from the log archive"), "{out}");
    let r = Mgmt::attach(common::Server::start(&target, &[], &[]), m.ca.clone());
    let got = roles(&r, &admin, "pitr-");
    assert_eq!(
        got,
        BTreeSet::from(["pitr-a".to_owned()]),
        "restored to {t}"
    );

    // To a revision too: the one that created B.
    let target = dir.path().join("restored-rev");
    let (code, out, err) = restore_to("--to-revision", &rv_b.to_string(), &target);
    assert_eq!(code, 0, "{out}{err}");
    let r = Mgmt::attach(common::Server::start(&target, &[], &[]), m.ca.clone());
    assert_eq!(
        roles(&r, &admin, "pitr-"),
        BTreeSet::from(["pitr-b".to_owned()])
    );

    // A hole in the archive is refused, naming it, and nothing is written:
    // the segment holding B's creation goes, once a later one exists.
    let (first, last, hole) = segments(&archive)
        .into_iter()
        .find(|(first, last, _)| (*first..=*last).contains(&rv_b))
        .expect("B's segment");
    common::wait("a segment after B's", Duration::from_secs(60), || {
        (archived(&archive) > last).then_some(())
    });
    std::fs::remove_file(&hole).unwrap();
    let target = dir.path().join("restored-hole");
    let (code, _, err) = restore_to("--to-revision", &rv_b.to_string(), &target);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("no segment with revisions {first} to {last}")),
        "hole {first}-{last}: {err}"
    );
    assert!(
        tree(&target).is_empty(),
        "a refused restore wrote something"
    );
}

/// Every file and its bytes under `dir` (nothing, if it does not exist).
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.extend(tree(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Everything a SQLite datastore holds: its revisions and every log row.
async fn sqlite_rows(db: &Path) -> ((i64, i64), Vec<(i64, String, i64, Vec<u8>)>) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let meta = sqlx::query_as("SELECT revision, compacted FROM drover_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let rows =
        sqlx::query_as("SELECT revision, key, deleted, value FROM drover_log ORDER BY revision")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    (meta, rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_restores_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let key_arg = key.to_str().unwrap();
    let m = Mgmt::start(&["--backup-encryption-key-file", key_arg]);
    let admin = m.admin();
    let b = backup_now(&m, &admin, "sealed", json!({"encrypt": true}));
    let (file, _) = file_of(&b);
    let good = m.dir.path().join("data/backups").join(&file);
    let bytes = std::fs::read(&good).unwrap();
    let (code, out, err) = backup_cli(
        &["verify", good.to_str().unwrap(), "--key-file", key_arg],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK") && out.contains("encrypted"), "{out}");

    let corrupted = dir.path().join("corrupted.drbk");
    let mut damaged = bytes.clone();
    let i = damaged.len() * 2 / 3;
    damaged[i] ^= 0x01;
    std::fs::write(&corrupted, &damaged).unwrap();

    let wrong_key = dir.path().join("wrong.key");
    std::fs::write(&wrong_key, "another key, also longer than thirty-two bytes").unwrap();

    let newer = dir.path().join("newer.drbk");
    let text = String::from_utf8_lossy(&bytes[..200]).into_owned();
    let version = text
        .split("\"droverVersion\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let bumped = format!("9{}", &version[1..]);
    let mut newer_bytes = bytes.clone();
    let at = newer_bytes
        .windows(version.len() + 17)
        .position(|w| w == format!("\"droverVersion\":\"{version}").as_bytes())
        .unwrap()
        + 17;
    newer_bytes[at..at + version.len()].copy_from_slice(bumped.as_bytes());
    std::fs::write(&newer, &newer_bytes).unwrap();

    let empty_target = dir.path().join("target");
    // `drover backup restore SOURCE --data-dir TARGET --key-file KEY …`.
    let restore = |source: &Path, key: &str, more: &[&str]| {
        let mut args = vec![
            "restore",
            source.to_str().unwrap(),
            "--data-dir",
            empty_target.to_str().unwrap(),
            "--key-file",
            key,
        ];
        args.extend_from_slice(more);
        backup_cli(&args, &[])
    };
    for (source, key, expect) in [
        (&corrupted, key_arg, "damaged"),
        (&good, wrong_key.to_str().unwrap(), "wrong key"),
        (&newer, key_arg, "newer"),
    ] {
        let (code, out, err) = restore(source, key, &[]);
        assert_ne!(code, 0, "{out}");
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(
            tree(&empty_target).is_empty(),
            "{expect}: something was written"
        );
        // verify says the same.
        let (code, _, err) = backup_cli(
            &["verify", source.to_str().unwrap(), "--key-file", key],
            &[],
        );
        assert_ne!(code, 0);
        assert!(err.contains(expect), "verify, {expect}: {err}");
    }

    // A server's datastore that holds data is refused whole: every row it
    // holds is unchanged (SQLite may rewrite its file's pages on open and
    // close; what it stores is what counts).
    let (code, out, err) = restore(&good, key_arg, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let db = empty_target.join("state.db");
    let before = sqlite_rows(&db).await;
    assert!(!before.1.is_empty());
    let (code, _, err) = restore(&good, key_arg, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not empty") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        sqlite_rows(&db).await,
        before,
        "a refused restore changed the datastore"
    );
    // --force says what it replaces, and does.
    let (code, out, err) = restore(&good, key_arg, &["--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("replacing") && err.contains("objects"),
        "{err}"
    );
}
