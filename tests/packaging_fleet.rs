//! The multi-replica Kubernetes example (`packaging/kubernetes-fleet`, a kustomize overlay of
//! `packaging/kubernetes`): it patches the base Deployment (same names), runs several replicas
//! on the PostgreSQL store, and reads the database URL from a Secret it declares, in a form
//! modelgate accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let doc = serde_yaml::Deserializer::from_str(&text)
        .next()
        .unwrap_or_else(|| panic!("{rel}: empty"));
    Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn the_fleet_overlay_runs_replicas_on_postgresql_with_the_url_from_a_secret() {
    let k = yaml("packaging/kubernetes-fleet/kustomization.yaml");
    let resources: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert!(resources.contains(&"../kubernetes"), "{resources:?}");
    for r in resources.iter().filter(|r| r.ends_with(".yaml")) {
        assert!(
            root().join("packaging/kubernetes-fleet").join(r).is_file(),
            "{r}"
        );
    }
    let patch_path = s(&k["patches"][0]["path"]);
    let patch = yaml(&format!("packaging/kubernetes-fleet/{patch_path}"));
    let secret = yaml("packaging/kubernetes-fleet/secret-postgres.yaml");
    let base = yaml("packaging/kubernetes/deployment.yaml");

    // The patch lands on the base Deployment and its container.
    assert_eq!(patch["kind"], base["kind"]);
    assert_eq!(patch["metadata"]["name"], base["metadata"]["name"]);
    let c = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["name"],
        base["spec"]["template"]["spec"]["containers"][0]["name"]
    );
    assert!(patch["spec"]["replicas"].as_u64().unwrap() > 1);

    let env: BTreeMap<&str, &Value> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]), e))
        .collect();
    assert_eq!(s(&env["STORAGE_TYPE"]["value"]), "postgresql");
    let from = &env["POSTGRES_URL"]["valueFrom"]["secretKeyRef"];
    assert_eq!(from["name"], secret["metadata"]["name"]);
    assert_eq!(secret["kind"], "Secret");
    let url = s(&secret["stringData"][s(&from["key"])]);
    modelgate::store::endpoint::PgUrl::parse(url, "POSTGRES_URL")
        .unwrap_or_else(|e| panic!("the Secret's example URL: {e}"));
}
