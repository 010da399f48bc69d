//! Defaulting, as kube-apiserver applies it when it decodes a built-in
//! object (on create and update): the fields a `kubectl get -o yaml` shows
//! although nobody set them.

use serde_json::{json, Value};

fn set(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_none_or(Value::is_null) {
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
        if let Some(Value::Object(m)) = obj.pointer_mut(parent) {
            m.insert(key.to_owned(), value);
        }
    }
}

fn ensure_object(obj: &mut Value, pointer: &str) {
    let mut path = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        let parent = path.clone();
        path.push('/');
        path.push_str(part);
        if obj.pointer(&path).is_none_or(Value::is_null) {
            if let Some(Value::Object(m)) = obj.pointer_mut(&parent) {
                m.insert(part.to_owned(), json!({}));
            } else if parent.is_empty() {
                if let Value::Object(m) = obj {
                    m.insert(part.to_owned(), json!({}));
                }
            }
        }
    }
}

/// A pod spec's defaults (also inside workload templates).
fn pod_spec(spec: &mut Value) {
    set(spec, "/restartPolicy", json!("Always"));
    set(spec, "/dnsPolicy", json!("ClusterFirst"));
    set(spec, "/schedulerName", json!("default-scheduler"));
    set(spec, "/terminationGracePeriodSeconds", json!(30));
    set(spec, "/securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers {
                let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                    !i.rsplit('/').next().unwrap_or(i).contains(':') || i.ends_with(":latest")
                });
                set(
                    c,
                    "/imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set(c, "/terminationMessagePath", json!("/dev/termination-log"));
                set(c, "/terminationMessagePolicy", json!("File"));
                set(c, "/resources", json!({}));
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports {
                        set(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// A Job's defaults (the selector and its labels are set by the Job
/// strategy on create, as kube-apiserver's).
fn job(obj: &mut Value) {
    ensure_object(obj, "/spec");
    // As kube: completions is 1 only when neither it nor parallelism is set.
    let unset = |p: &str| obj.pointer(p).is_none_or(Value::is_null);
    if unset("/spec/completions") && unset("/spec/parallelism") {
        set(obj, "/spec/completions", json!(1));
    }
    set(obj, "/spec/parallelism", json!(1));
    set(obj, "/spec/backoffLimit", json!(6));
    set(obj, "/spec/completionMode", json!("NonIndexed"));
    set(obj, "/spec/suspend", json!(false));
    set(
        obj,
        "/spec/podReplacementPolicy",
        json!("TerminatingOrFailed"),
    );
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec(spec);
    }
}

/// Apply the defaults of `kind` to `obj`.
pub(crate) fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Secret" => {
            set(obj, "/type", json!("Opaque"));
            drover_apiserver::object::merge_secret_string_data(obj);
        }
        "Namespace" => {
            ensure_object(obj, "/spec");
            set(obj, "/spec/finalizers", json!(["kubernetes"]));
            ensure_object(obj, "/status");
            set(obj, "/status/phase", json!("Active"));
            // kube-apiserver labels every namespace with its own name, on
            // create and on every update.
            let name = obj["metadata"]["name"].clone();
            ensure_object(obj, "/metadata/labels");
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
        }
        "Service" => {
            ensure_object(obj, "/spec");
            set(obj, "/spec/type", json!("ClusterIP"));
            set(obj, "/spec/sessionAffinity", json!("None"));
            if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
                for p in ports {
                    set(p, "/protocol", json!("TCP"));
                    if p.get("targetPort").is_none() {
                        let port = p.get("port").cloned().unwrap_or(Value::Null);
                        set(p, "/targetPort", port);
                    }
                }
            }
        }
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            ensure_object(obj, "/spec");
            if kind != "DaemonSet" {
                set(obj, "/spec/replicas", json!(1));
            }
            set(obj, "/spec/revisionHistoryLimit", json!(10));
            match kind {
                "Deployment" => {
                    set(obj, "/spec/progressDeadlineSeconds", json!(600));
                    set(
                        obj,
                        "/spec/strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                    );
                }
                "StatefulSet" => {
                    set(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
                    set(
                        obj,
                        "/spec/updateStrategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                    );
                    set(
                        obj,
                        "/spec/persistentVolumeClaimRetentionPolicy",
                        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                    );
                    if let Some(Value::Array(claims)) =
                        obj.pointer_mut("/spec/volumeClaimTemplates")
                    {
                        for c in claims {
                            set(c, "/apiVersion", json!("v1"));
                            set(c, "/kind", json!("PersistentVolumeClaim"));
                            ensure_object(c, "/spec");
                            set(c, "/spec/volumeMode", json!("Filesystem"));
                            ensure_object(c, "/status");
                            set(c, "/status/phase", json!("Pending"));
                        }
                    }
                }
                "DaemonSet" => set(
                    obj,
                    "/spec/updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
                ),
                _ => {}
            }
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                pod_spec(spec);
            }
        }
        "Job" => job(obj),
        "CronJob" => {
            ensure_object(obj, "/spec");
            set(obj, "/spec/concurrencyPolicy", json!("Allow"));
            set(obj, "/spec/suspend", json!(false));
            set(obj, "/spec/successfulJobsHistoryLimit", json!(3));
            set(obj, "/spec/failedJobsHistoryLimit", json!(1));
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                pod_spec(spec);
            }
        }
        "PriorityClass" => set(obj, "/preemptionPolicy", json!("PreemptLowerPriority")),
        "PersistentVolumeClaim" => {
            ensure_object(obj, "/spec");
            set(obj, "/spec/volumeMode", json!("Filesystem"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_is_unset() {
        let mut s = json!({"metadata": {"name": "x"}});
        apply("Secret", &mut s);
        assert_eq!(s["type"], "Opaque");
        let mut t = json!({"type": "kubernetes.io/tls"});
        apply("Secret", &mut t);
        assert_eq!(t["type"], "kubernetes.io/tls");
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "r/x:1.0", "ports": [{"containerPort": 80}]}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            (
                c[0]["imagePullPolicy"].as_str(),
                c[1]["imagePullPolicy"].as_str()
            ),
            (Some("Always"), Some("IfNotPresent"))
        );
        assert_eq!(c[1]["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let mut s = json!({"data": {"a": "b2xk", "k": "a2VlcA=="}, "stringData": {"a": "new"}});
        apply("Secret", &mut s);
        assert!(s.get("stringData").is_none(), "stringData is never stored");
        assert_eq!(s["data"]["a"], "bmV3", "stringData wins over data");
        assert_eq!(s["data"]["k"], "a2VlcA==");
    }
}
