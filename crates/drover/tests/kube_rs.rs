//! kube-rs, unchanged, against the management API: discovery, then create,
//! get, list with a label selector, merge patch, watch and delete through
//! its dynamic API.

mod common;

use std::time::Duration;

use common::Mgmt;
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Discovery;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_works_unchanged() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let m = Mgmt::start(&[]);
    let token = m.admin();
    let path = m.kubeconfig("admin", &token);
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    // The management server has no core (v1) kinds, so discovery is filtered
    // to the groups it serves, as kube-rs documents for partial discovery.
    let discovery = Discovery::new(client.clone())
        .filter(&["management.drover.io", "authorization.k8s.io"])
        .run()
        .await
        .unwrap();
    let group = discovery
        .get("management.drover.io")
        .expect("the management group is discovered");
    let (resource, caps) = group
        .recommended_kind("Cluster")
        .expect("Cluster is discovered");
    assert_eq!(resource.plural, "clusters");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    let gvk = kube::api::GroupVersionKind::gvk("management.drover.io", "v1", "Project");
    let (pinned, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
    assert_eq!(pinned.plural, "projects");
    let clusters: Api<DynamicObject> = Api::all_with(client.clone(), &resource);

    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "management.drover.io/v1", "kind": "Cluster",
        "metadata": {"name": "c-kubers", "labels": {"team": "platform"}},
        "spec": {"displayName": "From kube-rs"},
    }))
    .unwrap();
    let created = clusters.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("c-kubers"));
    let rv = created.metadata.resource_version.clone().unwrap();

    let got = clusters.get("c-kubers").await.unwrap();
    assert_eq!(got.data["spec"]["displayName"], "From kube-rs");
    let listed = clusters
        .list(&ListParams::default().labels("team=platform"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(clusters
        .list(&ListParams::default().labels("team=other"))
        .await
        .unwrap()
        .items
        .is_empty());

    let mut events = clusters
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    let patched = clusters
        .patch(
            "c-kubers",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"displayName": "Patched"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["displayName"], "Patched");
    match tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Modified(o)) => assert_eq!(o.data["spec"]["displayName"], "Patched"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    let missing = clusters.get("c-nope").await.unwrap_err();
    match missing {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"))
        }
        other => panic!("{other}"),
    }
    clusters
        .delete("c-kubers", &DeleteParams::default())
        .await
        .unwrap();
    assert!(clusters.get_opt("c-kubers").await.unwrap().is_none());
}
