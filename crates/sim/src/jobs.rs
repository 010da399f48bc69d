//! `batch/v1`, as kube's Job and CronJob controllers run it:
//!
//! - a Job runs pods to completion: up to `parallelism` at a time until
//!   `completions` succeeded (`Indexed` jobs give each pod its index), and
//!   fails once more than `backoffLimit` pods failed or it ran past
//!   `activeDeadlineSeconds`; `suspend` stops its pods;
//!   `ttlSecondsAfterFinished` removes it after it finished. How long a
//!   simulated pod runs and how it exits is up to the kubelet
//!   (`workloads`): `sleep N` runs N seconds, `exit N` fails.
//! - a CronJob makes a Job (`NAME-MINUTES`) at each time of its five-field
//!   schedule (UTC), honours `concurrencyPolicy`, `suspend` and
//!   `startingDeadlineSeconds`, and keeps `successfulJobsHistoryLimit` and
//!   `failedJobsHistoryLimit` finished Jobs.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use drover_apiserver::{ApiError, FieldError};
use drover_core::meta;
use drover_store::{Store, StoreError};
use serde_json::{json, Value};

use crate::events::{record, Event, Source};
use crate::workloads::{
    controller_uid, create_pod, delete_if_present, delete_pod, list, new_meta, owner_ref,
    pod_from_template, ready, s, write_if_changed, Created,
};

const JOBS: &str = "/registry/batch/jobs/";
const CRONJOBS: &str = "/registry/batch/cronjobs/";
const PODS: &str = "/registry/core/pods/";

/// What the Job strategy sets on create, as kube-apiserver's: the selector
/// on the Job's own UID and the labels that match it, unless
/// `manualSelector`; and the check that its pods run to completion.
pub(crate) fn prepare_job(job: &mut Value) -> Result<(), ApiError> {
    let name = s(job, "/metadata/name").to_owned();
    let policy = s(job, "/spec/template/spec/restartPolicy").to_owned();
    if policy != "Never" && policy != "OnFailure" {
        return Err(ApiError::invalid(
            "Job",
            "batch",
            &name,
            &[FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                json!(policy),
                &["OnFailure", "Never"],
            )],
        ));
    }
    if job.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return Ok(());
    }
    let uid = s(job, "/metadata/uid").to_owned();
    let labels = json!({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name,
    });
    job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    for (k, v) in labels.as_object().expect("object") {
        job["spec"]["template"]["metadata"]["labels"][k] = v.clone();
    }
    // The Job itself carries the names too, as kube labels it.
    job["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = json!(uid);
    job["metadata"]["labels"]["batch.kubernetes.io/job-name"] = json!(name);
    job["metadata"]["labels"]["controller-uid"] = json!(uid);
    job["metadata"]["labels"]["job-name"] = json!(name);
    Ok(())
}

/// Check a CronJob's schedule.
pub(crate) fn validate_cronjob(cj: &Value) -> Result<(), ApiError> {
    let schedule = s(cj, "/spec/schedule");
    parse_schedule(schedule).map(drop).map_err(|why| {
        ApiError::invalid(
            "CronJob",
            "batch",
            s(cj, "/metadata/name"),
            &[FieldError::invalid("spec.schedule", json!(schedule), &why)],
        )
    })
}

fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    let fields = schedule.split_whitespace().count();
    if !(schedule.starts_with('@') || fields == 5) {
        return Err(format!(
            "expected exactly 5 fields, found {fields}: {schedule}"
        ));
    }
    croner::Cron::from_str(schedule).map_err(|e| e.to_string())
}

fn condition(job: &Value, ty: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// Whether a Job finished (Complete or Failed).
pub(crate) fn finished(job: &Value) -> bool {
    condition(job, "Complete") || condition(job, "Failed")
}

/// One pass over every Job and CronJob; returns when the next is due
/// (a schedule, a deadline, a TTL).
pub(crate) async fn reconcile(
    store: &Store,
    open: &HashSet<String>,
) -> Result<Option<SystemTime>, StoreError> {
    let mut next: Option<SystemTime> = None;
    let mut due = |t: SystemTime| next = Some(next.map_or(t, |n: SystemTime| n.min(t)));
    let jobs = list(store, JOBS).await?;
    for (key, rev, cj) in list(store, CRONJOBS).await? {
        if cj.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let accepts = open.contains(s(&cj, "/metadata/namespace"));
        if let Some(t) = cronjob(store, &key, rev, &cj, accepts, &jobs).await? {
            due(t);
        }
    }
    let pods = list(store, PODS).await?;
    for (key, rev, job) in list(store, JOBS).await? {
        if job.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let accepts = open.contains(s(&job, "/metadata/namespace"));
        if let Some(t) = job_pass(store, &key, rev, &job, accepts, &pods).await? {
            due(t);
        }
    }
    Ok(next)
}

async fn job_pass(
    store: &Store,
    key: &str,
    rev: i64,
    job: &Value,
    accepts: bool,
    pods: &[(String, i64, Value)],
) -> Result<Option<SystemTime>, StoreError> {
    let now = SystemTime::now();
    if finished(job) {
        // ttlSecondsAfterFinished: the Job goes (its pods with it).
        let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_u64)
        else {
            return Ok(None);
        };
        let done = meta::parse_rfc3339(s(job, "/status/completionTime"))
            .or_else(|| {
                job.pointer("/status/conditions/0/lastTransitionTime")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_rfc3339)
            })
            .unwrap_or(now);
        let Some(expires) = done.checked_add(Duration::from_secs(ttl)) else {
            return Ok(None);
        };
        if now < expires {
            return Ok(Some(expires));
        }
        match store.delete(key, Some(rev)).await {
            Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        return Ok(None);
    }
    let uid = s(job, "/metadata/uid");
    let owned: Vec<&(String, i64, Value)> = pods
        .iter()
        .filter(|(_, _, p)| controller_uid(p) == Some(uid))
        .collect();
    let phase = |p: &Value| s(p, "/status/phase").to_owned();
    let succeeded: Vec<&Value> = owned
        .iter()
        .map(|(_, _, p)| p)
        .filter(|p| phase(p) == "Succeeded")
        .collect();
    let failed = owned
        .iter()
        .filter(|(_, _, p)| phase(p) == "Failed")
        .count() as i64;
    let active: Vec<&(String, i64, Value)> = owned
        .iter()
        .copied()
        .filter(|(_, _, p)| {
            !matches!(phase(p).as_str(), "Succeeded" | "Failed")
                && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect();
    let completions = job.pointer("/spec/completions").and_then(Value::as_i64);
    let parallelism = job
        .pointer("/spec/parallelism")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let backoff_limit = job
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_i64)
        .unwrap_or(6);
    let indexed = s(job, "/spec/completionMode") == "Indexed";
    let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
    let index_of = |p: &Value| {
        s(
            p,
            "/metadata/annotations/batch.kubernetes.io~1job-completion-index",
        )
        .parse::<i64>()
        .ok()
    };
    let done_indexes: std::collections::BTreeSet<i64> =
        succeeded.iter().filter_map(|p| index_of(p)).collect();
    let succeeded_count = if indexed {
        done_indexes.len() as i64
    } else {
        succeeded.len() as i64
    };
    let start = meta::parse_rfc3339(s(job, "/status/startTime"));
    let stamp = meta::now_rfc3339();
    let mut status = job.get("status").cloned().unwrap_or_else(|| json!({}));
    if start.is_none() && !suspended {
        status["startTime"] = json!(stamp);
    }
    let deadline = job
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_u64)
        .zip(start)
        .and_then(|(secs, start)| start.checked_add(Duration::from_secs(secs)));
    let cond = |ty: &str, reason: &str, message: &str| json!({"type": ty, "status": "True", "reason": reason, "message": message, "lastProbeTime": stamp, "lastTransitionTime": stamp});
    let complete = match completions {
        Some(c) => succeeded_count >= c,
        None => succeeded_count > 0 && active.is_empty(),
    };
    let mut wake = deadline;
    let mut outcome = None;
    if complete {
        outcome = Some((
            vec![
                cond(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                cond(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
            ],
            "Completed",
            "Job completed".to_owned(),
            false,
        ));
    } else if failed > backoff_limit {
        outcome = Some((
            vec![
                cond(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
                cond(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            ],
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_owned(),
            true,
        ));
    } else if deadline.is_some_and(|d| now >= d) {
        outcome = Some((
            vec![
                cond(
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
                cond(
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
            ],
            "DeadlineExceeded",
            "Job was active longer than specified deadline".to_owned(),
            true,
        ));
    }
    let mut active_count = active.len() as i64;
    if let Some((conditions, reason, message, warning)) = outcome {
        for (k, _, p) in &active {
            delete_pod(store, job, k, p, "job-controller").await?;
        }
        active_count = 0;
        status["conditions"] = json!(conditions);
        if !warning {
            status["completionTime"] = json!(stamp);
        }
        record(
            store,
            job,
            Event {
                source: Source::Controller("job-controller"),
                warning,
                reason,
                action: "",
                message,
                field_path: None,
            },
        )
        .await;
        if let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_u64)
        {
            wake = now.checked_add(Duration::from_secs(ttl));
        }
    } else if suspended {
        for (k, _, p) in &active {
            delete_pod(store, job, k, p, "job-controller").await?;
        }
        active_count = 0;
        if !condition(job, "Suspended") {
            status["conditions"] = json!([cond("Suspended", "JobSuspended", "Job suspended")]);
        }
    } else if accepts {
        if condition(job, "Suspended") {
            status["conditions"] = json!([]);
        }
        // Without completions, the first success ends the work: no more pods.
        let remaining = match completions {
            Some(c) => (c - succeeded_count).max(0),
            None if succeeded_count > 0 => 0,
            None => parallelism,
        };
        let want = parallelism.min(remaining);
        let mut taken: std::collections::BTreeSet<i64> = done_indexes.clone();
        taken.extend(active.iter().filter_map(|(_, _, p)| index_of(p)));
        let mut n = active_count;
        while n < want {
            let name = s(job, "/metadata/name");
            let index = indexed.then(|| (0..).find(|i| !taken.contains(i)).unwrap_or(0));
            let pod_name = match index {
                Some(ix) => format!("{name}-{ix}-{}", drover_core::names::random_suffix(5)),
                None => format!("{name}-{}", drover_core::names::random_suffix(5)),
            };
            let mut pod = pod_from_template(job, "Job", &pod_name);
            if let Some(ix) = index {
                taken.insert(ix);
                pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] =
                    json!(ix.to_string());
                pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] =
                    json!(ix.to_string());
                pod["spec"]["hostname"] = json!(format!("{name}-{ix}"));
                for c in pod["spec"]["containers"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}});
                    match c["env"].as_array_mut() {
                        Some(e) => e.push(env),
                        None => c["env"] = json!([env]),
                    }
                }
            }
            match create_pod(store, job, pod, "job-controller", None).await? {
                Created::Yes(_) => n += 1,
                Created::Taken => {}
                Created::Refused => break,
            }
        }
        active_count = n;
    }
    status["active"] = json!(active_count);
    status["succeeded"] = json!(succeeded_count);
    status["failed"] = json!(failed);
    status["ready"] = json!(active.iter().filter(|(_, _, p)| ready(p)).count());
    status["terminating"] = json!(0);
    status["uncountedTerminatedPods"] = json!({});
    if indexed {
        status["completedIndexes"] = json!(compress(&done_indexes));
    }
    for (k, zero) in [
        ("active", active_count == 0),
        ("succeeded", succeeded_count == 0),
        ("failed", failed == 0),
    ] {
        if zero {
            if let Some(m) = status.as_object_mut() {
                m.remove(k);
            }
        }
    }
    let mut new = job.clone();
    new["status"] = status;
    write_if_changed(store, key, rev, job, &new).await?;
    Ok(wake)
}

/// `1,3-5`, as kube writes completed indexes.
fn compress(indexes: &std::collections::BTreeSet<i64>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    for &i in indexes {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                parts.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    parts.join(",")
}

async fn cronjob(
    store: &Store,
    key: &str,
    rev: i64,
    cj: &Value,
    accepts: bool,
    jobs: &[(String, i64, Value)],
) -> Result<Option<SystemTime>, StoreError> {
    let Ok(cron) = parse_schedule(s(cj, "/spec/schedule")) else {
        return Ok(None);
    };
    let ns = s(cj, "/metadata/namespace").to_owned();
    let name = s(cj, "/metadata/name").to_owned();
    let uid = s(cj, "/metadata/uid");
    let mut owned: Vec<&(String, i64, Value)> = jobs
        .iter()
        .filter(|(_, _, j)| controller_uid(j) == Some(uid))
        .collect();
    owned.sort_by_key(|(_, _, j)| s(j, "/metadata/creationTimestamp").to_owned());
    let now = SystemTime::now();
    let mut status = cj.get("status").cloned().unwrap_or_else(|| json!({}));
    let last = meta::parse_rfc3339(s(cj, "/status/lastScheduleTime"))
        .or_else(|| meta::parse_rfc3339(s(cj, "/metadata/creationTimestamp")))
        .unwrap_or(now);
    let next_after = |t: SystemTime| -> Option<SystemTime> {
        let from: chrono::DateTime<chrono::Utc> = t.into();
        cron.find_next_occurrence(&from, false).ok().map(Into::into)
    };
    // The most recent time due, as kube's controller takes it (missed
    // earlier ones are not made up).
    let mut due = None;
    let mut t = last;
    for _ in 0..1000 {
        match next_after(t) {
            Some(n) if n <= now => {
                due = Some(n);
                t = n;
            }
            _ => break,
        }
    }
    let active: Vec<&&(String, i64, Value)> = owned
        .iter()
        .filter(|(_, _, j)| !crate::jobs::finished(j))
        .collect();
    let suspended = cj.pointer("/spec/suspend") == Some(&json!(true));
    if let (Some(when), true, false) = (due, accepts, suspended) {
        let late = now.duration_since(when).unwrap_or_default();
        let too_late = cj
            .pointer("/spec/startingDeadlineSeconds")
            .and_then(Value::as_u64)
            .is_some_and(|d| late > Duration::from_secs(d));
        let policy = s(cj, "/spec/concurrencyPolicy");
        let skip = too_late || (policy == "Forbid" && !active.is_empty());
        if policy == "Replace" && !too_late {
            for (k, _, j) in &active {
                delete_if_present(store, k).await?;
                record(
                    store,
                    cj,
                    Event {
                        source: Source::Controller("cronjob-controller"),
                        warning: false,
                        reason: "SuccessfulDelete",
                        action: "",
                        message: format!("Deleted job {}", s(j, "/metadata/name")),
                        field_path: None,
                    },
                )
                .await;
            }
        }
        if !skip {
            let minutes = when
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
                / 60;
            let job_name = format!("{name}-{minutes}");
            let labels = cj
                .pointer("/spec/jobTemplate/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let mut metadata =
                new_meta(&job_name, &ns, labels, owner_ref("CronJob", "batch/v1", cj));
            let mut annotations = cj
                .pointer("/spec/jobTemplate/metadata/annotations")
                .cloned()
                .unwrap_or_else(|| json!({}));
            annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] =
                json!(meta::rfc3339(when));
            metadata["annotations"] = annotations;
            let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
                "spec": cj.pointer("/spec/jobTemplate/spec").cloned().unwrap_or_else(|| json!({})), "status": {}});
            crate::defaults::apply("Job", &mut job);
            let created = match prepare_job(&mut job) {
                Ok(()) => {
                    let job_key = drover_core::keys::object("batch", "jobs", Some(&ns), &job_name);
                    match store.create(&job_key, job.to_string()).await {
                        Ok(_) => true,
                        Err(StoreError::AlreadyExists(_)) => false,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    record(
                        store,
                        cj,
                        Event {
                            source: Source::Controller("cronjob-controller"),
                            warning: true,
                            reason: "FailedCreate",
                            action: "",
                            message: format!("Error creating job: {}", e.message),
                            field_path: None,
                        },
                    )
                    .await;
                    false
                }
            };
            if created {
                record(
                    store,
                    cj,
                    Event {
                        source: Source::Controller("cronjob-controller"),
                        warning: false,
                        reason: "SuccessfulCreate",
                        action: "",
                        message: format!("Created job {job_name}"),
                        field_path: None,
                    },
                )
                .await;
            }
        }
        status["lastScheduleTime"] = json!(meta::rfc3339(when));
    }
    // History: the newest finished Jobs stay, within the limits.
    let limit = |f: &str, default: i64| {
        cj.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(default)
            .max(0) as usize
    };
    for (ty, keep) in [
        ("Complete", limit("successfulJobsHistoryLimit", 3)),
        ("Failed", limit("failedJobsHistoryLimit", 1)),
    ] {
        let done: Vec<&&(String, i64, Value)> =
            owned.iter().filter(|(_, _, j)| condition(j, ty)).collect();
        for (k, _, _) in done.iter().take(done.len().saturating_sub(keep)) {
            delete_if_present(store, k).await?;
        }
    }
    if let Some(t) = owned
        .iter()
        .filter(|(_, _, j)| condition(j, "Complete"))
        .filter_map(|(_, _, j)| meta::parse_rfc3339(s(j, "/status/completionTime")))
        .max()
    {
        status["lastSuccessfulTime"] = json!(meta::rfc3339(t));
    }
    let refs: Vec<Value> = list(store, JOBS)
        .await?
        .iter()
        .filter(|(_, _, j)| controller_uid(j) == Some(uid) && !finished(j))
        .map(|(_, _, j)| json!({"kind": "Job", "namespace": ns, "name": s(j, "/metadata/name"), "uid": s(j, "/metadata/uid"), "apiVersion": "batch/v1", "resourceVersion": ""}))
        .collect();
    if refs.is_empty() {
        if let Some(m) = status.as_object_mut() {
            m.remove("active");
        }
    } else {
        status["active"] = json!(refs);
    }
    let mut new = cj.clone();
    new["status"] = status;
    write_if_changed(store, key, rev, cj, &new).await?;
    let from = meta::parse_rfc3339(s(&new, "/status/lastScheduleTime")).unwrap_or(last);
    Ok(next_after(from.max(now - Duration::from_secs(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_are_written_as_ranges() {
        let set = |v: &[i64]| v.iter().copied().collect();
        assert_eq!(compress(&set(&[0, 1, 2, 4, 6, 7])), "0-2,4,6-7");
        assert_eq!(compress(&set(&[])), "");
    }

    #[test]
    fn schedules_have_five_fields_or_a_macro() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(parse_schedule("* * * *").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
    }

    #[test]
    fn a_job_needs_pods_that_end() {
        let mut job = json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {"spec": {"restartPolicy": "Always"}}}});
        assert!(prepare_job(&mut job).is_err());
        job["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        prepare_job(&mut job).unwrap();
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "j"
        );
    }
}
