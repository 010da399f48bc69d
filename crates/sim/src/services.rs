//! Services as kube-apiserver and its controllers run them:
//!
//! - a ClusterIP from the service range (10.96.0.0/12) for every Service
//!   but headless (`clusterIP: None`) and ExternalName ones, and NodePorts
//!   (30000–32767) for NodePort and LoadBalancer ones. Each address and
//!   port is reserved by a record created in the Service's own
//!   transaction, so two Services never share one, and freed with it;
//! - the `kubernetes` Service in `default`, at 10.96.0.1, with Endpoints
//!   and an EndpointSlice naming the API server;
//! - Endpoints and EndpointSlices for Services with a selector, from the
//!   pods it selects (ready ones as addresses, others as not ready).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use drover_apiserver::{ApiError, FieldError};
use drover_core::meta;
use drover_store::{Op, Store, StoreError};
use rand::Rng;
use serde_json::{json, Value};

use crate::workloads::{create_if_absent, delete_if_present, list, owner_ref, s, write_if_changed};

/// Where allocated cluster IPs are recorded.
const IP_RECORDS: &str = "/sim/service-ips/";
/// Where allocated node ports are recorded.
const PORT_RECORDS: &str = "/sim/service-node-ports/";
/// The service range, 10.96.0.0/12, as kubeadm sets it.
const RANGE_START: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const RANGE_SIZE: u32 = 1 << 20;
/// The `kubernetes` Service's address: the first of the range.
pub(crate) const KUBERNETES_IP: &str = "10.96.0.1";
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

const SERVICES: &str = "/registry/core/services/";
const PODS: &str = "/registry/core/pods/";
const ENDPOINTS: &str = "/registry/core/endpoints/";
const SLICES: &str = "/registry/discovery.k8s.io/endpointslices/";

fn ip_key(ip: &str) -> String {
    format!("{IP_RECORDS}{ip}")
}

fn port_key(port: i64) -> String {
    format!("{PORT_RECORDS}{port}")
}

fn invalid(name: &str, field: &str, value: Value, why: &str) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        name,
        &[FieldError::invalid(field, value, why)],
    )
}

/// The records a new Service reserves (its cluster IP and node ports),
/// filling in what it leaves to the server. `old` is the Service before an
/// update: what it had stays, and only new needs are allocated.
pub(crate) async fn allocate(
    store: &Store,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<Op>, ApiError> {
    let name = s(svc, "/metadata/name").to_owned();
    let ns = s(svc, "/metadata/namespace").to_owned();
    let owner = format!("{ns}/{name}");
    let ty = s(svc, "/spec/type").to_owned();
    let mut ops = Vec::new();
    let unavailable = |_: StoreError| ApiError::unavailable("the datastore is unavailable");

    // Cluster IP.
    let old_ip = old.map(|o| s(o, "/spec/clusterIP").to_owned());
    let given = s(svc, "/spec/clusterIP").to_owned();
    if ty == "ExternalName" && !given.is_empty() && old_ip.as_deref() != Some(given.as_str()) {
        return Err(invalid(
            &name,
            "spec.clusterIPs",
            json!([given]),
            "may not be set for ExternalName services",
        ));
    }
    if let Some(old_ip) = old_ip.filter(|ip| !ip.is_empty()) {
        if given.is_empty() {
            svc["spec"]["clusterIP"] = json!(old_ip);
        } else if given != old_ip && ty != "ExternalName" {
            return Err(invalid(
                &name,
                "spec.clusterIPs[0]",
                json!(given),
                "may not change once set",
            ));
        }
    } else if ty == "ExternalName" {
        // No address.
    } else if given == "None" {
        svc["spec"]["clusterIP"] = json!("None");
    } else if !given.is_empty() {
        let ip: Ipv4Addr = given.parse().map_err(|_| {
            invalid(
                &name,
                "spec.clusterIPs[0]",
                json!(given),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )
        })?;
        let n = u32::from(ip).wrapping_sub(RANGE_START);
        if n == 0 || n >= RANGE_SIZE - 1 {
            return Err(invalid(
                &name,
                "spec.clusterIPs",
                json!([given]),
                "failed to allocate IP: the provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
            ));
        }
        let taken = store.get(&ip_key(&given)).await.map_err(unavailable)?;
        if taken.is_some() {
            return Err(invalid(
                &name,
                "spec.clusterIPs",
                json!([given]),
                &format!("failed to allocate IP {given}: provided IP is already allocated"),
            ));
        }
        ops.push(Op::create(ip_key(&given), owner.clone()));
    } else {
        let ip = free_ip(store).await?;
        svc["spec"]["clusterIP"] = json!(ip);
        ops.push(Op::create(ip_key(&ip), owner.clone()));
    }
    let ip = s(svc, "/spec/clusterIP").to_owned();
    if !ip.is_empty() {
        svc["spec"]["clusterIPs"] = json!([ip]);
        if ip != "None" {
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
        }
    }
    if ty != "ExternalName" && svc.pointer("/spec/internalTrafficPolicy").is_none() {
        svc["spec"]["internalTrafficPolicy"] = json!("Cluster");
    }

    // Node ports.
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        if svc.pointer("/spec/externalTrafficPolicy").is_none() {
            svc["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }
        if ty == "LoadBalancer" && svc.pointer("/spec/allocateLoadBalancerNodePorts").is_none() {
            svc["spec"]["allocateLoadBalancerNodePorts"] = json!(true);
        }
        let held: Vec<i64> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let mut taken_here: Vec<i64> = Vec::new();
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let given = svc["spec"]["ports"][i]["nodePort"].as_i64();
            let port = match given {
                Some(p) if held.contains(&p) => p,
                Some(p) => {
                    if !u16::try_from(p).is_ok_and(|p| NODE_PORTS.contains(&p)) {
                        return Err(invalid(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            json!(p),
                            "provided port is not in the valid range. The range of valid ports is 30000-32767",
                        ));
                    }
                    let taken = store.get(&port_key(p)).await.map_err(unavailable)?;
                    if taken.is_some() || taken_here.contains(&p) {
                        return Err(invalid(
                            &name,
                            &format!("spec.ports[{i}].nodePort"),
                            json!(p),
                            "provided port is already allocated",
                        ));
                    }
                    ops.push(Op::create(port_key(p), owner.clone()));
                    p
                }
                None => {
                    let p = free_port(store, &taken_here).await?;
                    ops.push(Op::create(port_key(p), owner.clone()));
                    p
                }
            };
            taken_here.push(port);
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    if ty == "LoadBalancer" && svc.pointer("/status/loadBalancer").is_none() {
        svc["status"] = json!({"loadBalancer": {}});
    }
    // What an update gives up is freed in the same transaction.
    if let Some(old) = old {
        ops.extend(deletes(store, dropped_ports(old, svc), &owner).await?);
    }
    Ok(ops)
}

/// The node-port records `old` held and `new` no longer does.
fn dropped_ports(old: &Value, new: &Value) -> Vec<String> {
    let ports = |v: &Value| -> Vec<i64> {
        v.pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_i64())
            .collect()
    };
    let keep = ports(new);
    ports(old)
        .into_iter()
        .filter(|p| !keep.contains(p))
        .map(port_key)
        .collect()
}

/// The deletes of those of `keys` that exist and are held by `owner`
/// (`ns/name`): a record may be missing for a Service stored before
/// addresses were recorded, and another Service's is never touched.
async fn deletes(store: &Store, keys: Vec<String>, owner: &str) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    for key in keys {
        let kv = store
            .get(&key)
            .await
            .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
        if let Some(kv) = kv.filter(|kv| kv.value.as_ref() == owner.as_bytes()) {
            ops.push(Op::delete(key, kv.mod_revision));
        }
    }
    Ok(ops)
}

/// The deletes of every record a Service holds (on its deletion).
pub(crate) async fn release(store: &Store, svc: &Value) -> Result<Vec<Op>, ApiError> {
    let owner = format!(
        "{}/{}",
        s(svc, "/metadata/namespace"),
        s(svc, "/metadata/name")
    );
    let mut keys = dropped_ports(svc, &json!({}));
    let ip = s(svc, "/spec/clusterIP");
    if !ip.is_empty() && ip != "None" {
        keys.push(ip_key(ip));
    }
    deletes(store, keys, &owner).await
}

async fn free_ip(store: &Store) -> Result<String, ApiError> {
    for _ in 0..32 {
        // Never the network address, the first (kubernetes) or the last.
        let n = rand::thread_rng().gen_range(2..RANGE_SIZE - 1);
        let ip = Ipv4Addr::from(RANGE_START + n).to_string();
        let taken = store
            .get(&ip_key(&ip))
            .await
            .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
        if taken.is_none() {
            return Ok(ip);
        }
    }
    Err(ApiError::internal(
        "failed to allocate a serviceIP: range is full",
    ))
}

async fn free_port(store: &Store, also_taken: &[i64]) -> Result<i64, ApiError> {
    for _ in 0..64 {
        let p = i64::from(rand::thread_rng().gen_range(NODE_PORTS));
        if also_taken.contains(&p) {
            continue;
        }
        let taken = store
            .get(&port_key(p))
            .await
            .map_err(|_| ApiError::unavailable("the datastore is unavailable"))?;
        if taken.is_none() {
            return Ok(p);
        }
    }
    Err(ApiError::internal(
        "failed to allocate a nodePort: range is full",
    ))
}

/// The record that reserves the `kubernetes` Service's address.
pub(crate) fn kubernetes_record() -> (String, &'static str) {
    (ip_key(KUBERNETES_IP), "default/kubernetes")
}

/// The `kubernetes` Service in `default`, and its Endpoints and
/// EndpointSlice pointing at the API server.
pub(crate) fn kubernetes_service(api_port: u16) -> Vec<(String, Value)> {
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(),
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": KUBERNETES_IP, "clusterIPs": [KUBERNETES_IP], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        "status": {"loadBalancer": {}},
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(),
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339(),
            "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
    });
    vec![
        (
            drover_core::keys::object("", "services", Some("default"), "kubernetes"),
            svc,
        ),
        (
            drover_core::keys::object("", "endpoints", Some("default"), "kubernetes"),
            endpoints,
        ),
        (
            drover_core::keys::object(
                "discovery.k8s.io",
                "endpointslices",
                Some("default"),
                "kubernetes",
            ),
            slice,
        ),
    ]
}

fn selects(selector: &serde_json::Map<String, Value>, pod: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| pod.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1"))) == Some(v))
}

/// A service port's target on a pod: a number, or a named container port.
fn target_port(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port["port"].as_i64(),
    }
}

/// Keep Endpoints and an EndpointSlice per selecting Service in step with
/// its pods; remove those of Services that are gone.
pub(crate) async fn reconcile_endpoints(store: &Store) -> Result<(), StoreError> {
    let services = list(store, SERVICES).await?;
    let pods = list(store, PODS).await?;
    let endpoints = list(store, ENDPOINTS).await?;
    let slices = list(store, SLICES).await?;
    let mut wanted: BTreeMap<(String, String), ()> = BTreeMap::new();
    for (_, _, svc) in &services {
        let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        if selector.is_empty() {
            continue;
        }
        let ns = s(svc, "/metadata/namespace").to_owned();
        let name = s(svc, "/metadata/name").to_owned();
        wanted.insert((ns.clone(), name.clone()), ());
        let ports: Vec<Value> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        let mut slice_endpoints = Vec::new();
        let mut resolved: Vec<Value> = Vec::new();
        let mut selected: Vec<&Value> = pods
            .iter()
            .map(|(_, _, p)| p)
            .filter(|p| s(p, "/metadata/namespace") == ns && selects(selector, p))
            .filter(|p| !s(p, "/status/podIP").is_empty())
            .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
            .collect();
        selected.sort_by_key(|p| s(p, "/status/podIP").to_owned());
        for pod in selected {
            let ip = s(pod, "/status/podIP");
            let is_ready = crate::workloads::ready(pod);
            let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
            let target = json!({"kind": "Pod", "namespace": ns, "name": s(pod, "/metadata/name"), "uid": s(pod, "/metadata/uid")});
            let address =
                json!({"ip": ip, "nodeName": s(pod, "/spec/nodeName"), "targetRef": target});
            if is_ready && !terminating {
                ready.push(address);
            } else {
                not_ready.push(address);
            }
            slice_endpoints.push(json!({
                "addresses": [ip], "nodeName": s(pod, "/spec/nodeName"), "targetRef": target,
                "conditions": {"ready": is_ready && !terminating, "serving": is_ready, "terminating": terminating},
            }));
            if resolved.is_empty() {
                resolved = ports
                    .iter()
                    .filter_map(|p| {
                        let mut out = json!({"port": target_port(p, pod)?, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
                        if let Some(n) = p["name"].as_str() {
                            out["name"] = json!(n);
                        }
                        Some(out)
                    })
                    .collect();
            }
        }
        let mut subsets = Vec::new();
        if !ready.is_empty() || !not_ready.is_empty() {
            let mut subset = json!({"ports": resolved});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            subsets.push(subset);
        }
        let labels = svc
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or_else(|| json!({}));
        // Endpoints: same name as the Service.
        let ep_key = drover_core::keys::object("", "endpoints", Some(&ns), &name);
        let existing = endpoints.iter().find(|(k, _, _)| *k == ep_key);
        let mut ep = match existing {
            Some((_, _, e)) => e.clone(),
            None => json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "uid": meta::new_uid(), "creationTimestamp": meta::now_rfc3339()}}),
        };
        ep["metadata"]["labels"] = labels.clone();
        if ep
            .pointer("/metadata/annotations/endpoints.kubernetes.io~1last-change-trigger-time")
            .is_none()
        {
            ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] =
                json!(meta::now_rfc3339());
        }
        if subsets.is_empty() {
            if let Some(m) = ep.as_object_mut() {
                m.remove("subsets");
            }
        } else {
            ep["subsets"] = json!(subsets);
        }
        match existing {
            Some((k, rev, old)) => write_if_changed(store, k, *rev, old, &ep).await?,
            None => create_if_absent(store, &ep_key, &ep).await?,
        }
        // One EndpointSlice, owned by the Service.
        let uid = s(svc, "/metadata/uid");
        let existing = slices.iter().find(|(_, _, sl)| {
            s(sl, "/metadata/namespace") == ns
                && s(sl, "/metadata/labels/kubernetes.io~1service-name") == name
                && crate::workloads::controller_uid(sl) == Some(uid)
        });
        let mut slice_labels = labels.clone();
        slice_labels["kubernetes.io/service-name"] = json!(name);
        slice_labels["endpointslice.kubernetes.io/managed-by"] =
            json!("endpointslice-controller.k8s.io");
        let mut slice = match existing {
            Some((_, _, sl)) => sl.clone(),
            None => {
                let slice_name = format!("{name}-{}", drover_core::names::random_suffix(5));
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": slice_name, "generateName": format!("{name}-"), "namespace": ns, "uid": meta::new_uid(),
                        "creationTimestamp": meta::now_rfc3339(), "ownerReferences": owner_ref("Service", "v1", svc)},
                    "addressType": "IPv4"})
            }
        };
        slice["metadata"]["labels"] = slice_labels;
        slice["endpoints"] = json!(slice_endpoints);
        slice["ports"] = json!(resolved);
        match existing {
            Some((k, rev, old)) => write_if_changed(store, k, *rev, old, &slice).await?,
            None => {
                let key = drover_core::keys::object(
                    "discovery.k8s.io",
                    "endpointslices",
                    Some(&ns),
                    s(&slice, "/metadata/name"),
                );
                create_if_absent(store, &key, &slice).await?;
            }
        }
    }
    // Endpoints and slices of selecting Services that are gone.
    let service_uids: Vec<&str> = services
        .iter()
        .map(|(_, _, svc)| s(svc, "/metadata/uid"))
        .collect();
    for (k, _, sl) in &slices {
        let ours = s(
            sl,
            "/metadata/labels/endpointslice.kubernetes.io~1managed-by",
        ) == "endpointslice-controller.k8s.io";
        if ours && crate::workloads::controller_uid(sl).is_some_and(|u| !service_uids.contains(&u))
        {
            delete_if_present(store, k).await?;
        }
    }
    for (k, _, ep) in &endpoints {
        let ns = s(ep, "/metadata/namespace");
        let name = s(ep, "/metadata/name");
        if wanted.contains_key(&(ns.to_owned(), name.to_owned())) {
            continue;
        }
        // Ours (marked as kube's controller marks them) go with their
        // Service or its selector; those users wrote stay.
        let ours = ep
            .pointer("/metadata/annotations/endpoints.kubernetes.io~1last-change-trigger-time")
            .is_some();
        if ours {
            delete_if_present(store, k).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_target_port_resolves_to_the_containers_port() {
        let pod =
            json!({"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": "http"}), &pod),
            Some(8080)
        );
        assert_eq!(
            target_port(&json!({"port": 80, "targetPort": 9000}), &pod),
            Some(9000)
        );
        assert_eq!(target_port(&json!({"port": 80}), &pod), Some(80));
    }
}
