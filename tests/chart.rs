//! The Helm chart, offline, through the field's own tools: `helm lint --strict` and rendering by
//! Helm v4 (helm-python-sdk), every rendered built-in object validated by kubernetes-validate
//! against the oldest and newest Kubernetes the chart supports, the rendered gateway config run
//! through `wa-gateway validate`, the alert rules through `promtool check rules` and the unit
//! tests in `charts/wa-gateway/tests/alerts.test.yaml` through `promtool test rules`.
//! The tools come from `charts/requirements.txt` (see `tests/tools`); in CI they are required.

use crate::tools;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The oldest and newest Kubernetes the chart supports (Chart.yaml's kubeVersion says the same).
const KUBE_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
const RELEASE: &str = "wa-gateway";
const NAMESPACE: &str = "wa";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/wa-gateway")
}

/// `None` for the chart's own defaults, else each file under `ci/` (the chart-testing convention).
fn values_files() -> Vec<Option<String>> {
    let mut files: Vec<String> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/wa-gateway/ci")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("ci/{n}"))
        .collect();
    files.sort();
    assert!(
        files.contains(&"ci/default-values.yaml".to_owned())
            && files.contains(&"ci/everything-on-values.yaml".to_owned()),
        "{files:?}"
    );
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn case_id(file: &Option<String>) -> String {
    file.clone().unwrap_or_else(|| "chart defaults".into())
}

/// Values that values.schema.json (or the chart's own checks) must refuse, with a piece of the
/// refusal. Each is layered over the chart's defaults, which render fine.
fn bad_values() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "several replicas on SQLite",
            json!({ "replicaCount": 3 }),
            "/replicaCount",
        ),
        (
            "an autoscaler on SQLite",
            json!({ "autoscaling": { "enabled": true } }),
            "/autoscaling/enabled",
        ),
        (
            "an unknown storage kind",
            json!({ "storage": { "kind": "mysql" } }),
            "/storage/kind",
        ),
        (
            "a misspelt top-level key",
            json!({ "replicas": 2 }),
            "replicas",
        ),
        (
            "a phone number id that is not digits",
            json!({ "config": { "numbers": [{ "phone_number_id": "+15550001", "waba_id": "1", "agent": "echo", "access_token": { "env": "WA_TOKEN_DEMO" } }] } }),
            "/config/numbers/0/phone_number_id",
        ),
        (
            "a public URL not ending in /webhook",
            json!({ "config": { "public_url": "https://wa.example.com/hook" } }),
            "/config/public_url",
        ),
        (
            "a listen address the chart owns",
            json!({ "config": { "listen": { "webhook": "0.0.0.0:1" } } }),
            "/config/listen",
        ),
        (
            "an inline secret for Meta's real Graph API",
            json!({ "config": { "meta": { "graph_url": "https://graph.facebook.com", "app_secret": { "value": "s" } } } }),
            "/config/meta/app_secret",
        ),
        (
            "a secret reference of an unknown kind",
            json!({ "config": { "meta": { "verify_token": { "vault": "x" } } } }),
            "/config/meta/verify_token",
        ),
        (
            "in-pod TLS without a Secret",
            json!({ "tls": { "enabled": true } }),
            "/tls/secretName",
        ),
        (
            "a writable root filesystem",
            json!({ "securityContext": { "readOnlyRootFilesystem": false } }),
            "/securityContext/readOnlyRootFilesystem",
        ),
        (
            "privilege escalation",
            json!({ "securityContext": { "allowPrivilegeEscalation": true } }),
            "/securityContext/allowPrivilegeEscalation",
        ),
        (
            "running as root",
            json!({ "podSecurityContext": { "runAsNonRoot": false } }),
            "/podSecurityContext/runAsNonRoot",
        ),
        (
            "no resources",
            json!({ "resources": { "requests": null } }),
            "/resources",
        ),
        (
            "a bad alert threshold",
            json!({ "metrics": { "prometheusRule": { "thresholds": { "deliveryFailureRatio": 5 } } } }),
            "/metrics/prometheusRule/thresholds/deliveryFailureRatio",
        ),
        (
            "a config secret the created Secret lacks",
            json!({ "secrets": { "values": { "WA_TOKEN_DEMO": null } } }),
            "secrets.values has no key WA_TOKEN_DEMO",
        ),
        (
            "an admin port without a token",
            json!({ "adminToken": { "enabled": false } }),
            "adminToken.enabled must stay true",
        ),
        (
            "a PostgreSQL password key the created Secret lacks",
            json!({ "storage": { "kind": "postgres" } }),
            "secrets.values has no key PGPASSWORD",
        ),
    ]
}

/// Where the TLS files are mounted in the renders that `wa-gateway validate` checks, so that the
/// rendered config points at a real certificate written there.
fn tls_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["wa.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
        dir
    })
    .path()
}

/// One run of `charts/chart_tool.py` for every case the tests look at (it loads Helm once),
/// shared by the tests; `None` when the tools are missing outside CI.
fn rendered() -> Option<&'static BTreeMap<String, Value>> {
    static OUT: OnceLock<Option<BTreeMap<String, Value>>> = OnceLock::new();
    OUT.get_or_init(|| {
        let python = tools::chart_python()?;
        let mut cases = Vec::new();
        for file in values_files() {
            cases.push(json!({ "id": case_id(&file), "values_file": file }));
            cases.push(json!({
                "id": format!("validate: {}", case_id(&file)),
                "values_file": file,
                "values": { "tls": { "mountPath": tls_dir().to_str().unwrap() } },
                "lint": false, "validate": false,
            }));
        }
        for (what, values, _) in bad_values() {
            cases.push(json!({ "id": format!("bad: {what}"), "values": values, "lint": false, "validate": false }));
        }
        let request = json!({
            "chart": chart_dir(),
            "kube_versions": KUBE_VERSIONS,
            "cases": cases,
        });
        let out = tools::run_with_stdin(
            Command::new(&python)
                .arg(repo().join("charts/chart_tool.py"))
                .current_dir(repo()),
            request.to_string().as_bytes(),
        );
        assert!(out.status.success(), "chart_tool.py failed:\n{}", tools::said(&out));
        let answer: Value = serde_json::from_slice(&out.stdout).expect("chart_tool.py answers JSON");
        eprintln!(
            "chart tools: Helm SDK {}, kubernetes-validate {}",
            answer["helm_sdk_version"], answer["kubernetes_validate_version"]
        );
        Some(
            answer["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["id"].as_str().unwrap().to_owned(), c.clone()))
                .collect(),
        )
    })
    .as_ref()
}

fn case<'a>(all: &'a BTreeMap<String, Value>, id: &str) -> &'a Value {
    let c = &all[id];
    assert!(
        c["error"].is_null(),
        "{id}: the chart did not render: {}",
        c["error"]
    );
    c
}

fn objects(case: &Value) -> Vec<&Value> {
    case["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["object"])
        .collect()
}

fn find<'a>(case: &'a Value, kind: &str, name: &str) -> &'a Value {
    objects(case)
        .into_iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {}", case["id"]))
}

fn kinds(case: &Value) -> BTreeSet<String> {
    objects(case)
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn is_crd_kind(obj: &Value) -> bool {
    obj["apiVersion"]
        .as_str()
        .unwrap()
        .starts_with("monitoring.coreos.com/")
}

#[test]
fn lints_renders_and_validates_against_the_oldest_and_newest_kubernetes() {
    let Some(all) = rendered() else { return };
    for file in values_files() {
        let id = case_id(&file);
        let c = case(all, &id);
        let lint = c["lint"].as_array().unwrap();
        assert_eq!(lint.len(), KUBE_VERSIONS.len(), "{id}");
        for run in lint {
            let problems: Vec<_> = run["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["severity"].as_i64().unwrap() >= 2)
                .collect();
            assert!(
                problems.is_empty() && run["errors"].as_array().unwrap().is_empty(),
                "{id}: helm lint --strict (Kubernetes {}): {problems:?} {}",
                run["kube_version"],
                run["errors"]
            );
        }
        for o in c["objects"].as_array().unwrap() {
            let obj = &o["object"];
            let what = format!("{id}: {} {}", obj["kind"], obj["metadata"]["name"]);
            let checks = o["validation"].as_array().unwrap();
            assert_eq!(checks.len(), KUBE_VERSIONS.len(), "{what}");
            for check in checks {
                let expected = if is_crd_kind(obj) { "no_schema" } else { "ok" };
                assert_eq!(
                    check["result"], expected,
                    "{what} against Kubernetes {}: {}",
                    check["kube_version"], check["message"]
                );
            }
        }
        let deployment = find(c, "Deployment", RELEASE);
        hardened(&id, deployment);
        services_reach_the_pods(&id, c, deployment);
    }
}

#[test]
fn default_and_everything_on_render_what_they_promise() {
    let Some(all) = rendered() else { return };
    let always = [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ];
    let optional = [
        "HorizontalPodAutoscaler",
        "Ingress",
        "PrometheusRule",
        "ServiceMonitor",
    ];
    let defaults = kinds(case(all, "chart defaults"));
    for k in always.iter().chain(["PersistentVolumeClaim"].iter()) {
        assert!(defaults.contains(*k), "defaults lack {k}: {defaults:?}");
    }
    for k in optional {
        assert!(!defaults.contains(k), "{k} is on by default: {defaults:?}");
    }
    let everything = case(all, "ci/everything-on-values.yaml");
    let kinds_on = kinds(everything);
    for k in always.iter().chain(optional.iter()) {
        assert!(
            kinds_on.contains(*k),
            "everything-on lacks {k}: {kinds_on:?}"
        );
    }
    assert!(
        !kinds_on.contains("PersistentVolumeClaim"),
        "PostgreSQL needs no data volume claim"
    );
    find(everything, "ConfigMap", &format!("{RELEASE}-dashboard"));

    // The ServiceMonitor scrapes the admin Service's /metrics; the schema-less CRD objects are
    // checked here for the shape the Prometheus Operator reads.
    let sm = find(everything, "ServiceMonitor", RELEASE);
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let admin = find(everything, "Service", &format!("{RELEASE}-admin"));
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &admin["metadata"]["labels"][k], v,
            "ServiceMonitor selects {k}={v}"
        );
    }
    let webhook = find(everything, "Service", RELEASE);
    assert_ne!(
        webhook["metadata"]["labels"]["app.kubernetes.io/component"],
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "the ServiceMonitor must not select the webhook Service"
    );
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["port"], admin["spec"]["ports"][0]["name"]);
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([NAMESPACE])
    );

    let rule = find(everything, "PrometheusRule", RELEASE);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let groups = rule["spec"]["groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["name"].is_string());
        for r in g["rules"].as_array().unwrap() {
            assert!(
                r["alert"].is_string() && r["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{r}"
            );
            assert!(
                ["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{r}"
            );
            assert!(
                r["annotations"]["summary"].is_string()
                    && r["annotations"]["description"].is_string(),
                "{r}"
            );
        }
    }

    // The Ingress sends Meta to the webhook port and nothing else.
    let ingress = find(everything, "Ingress", RELEASE);
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0]["path"], "/webhook");
    assert_eq!(paths[0]["backend"]["service"]["name"], RELEASE);
    assert_eq!(paths[0]["backend"]["service"]["port"]["name"], "webhook");

    // SQLite: one pod at a time on the volume; PostgreSQL: rolling, several replicas.
    let d = find(case(all, "chart defaults"), "Deployment", RELEASE);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(d["spec"]["replicas"], 1);
    let d = find(everything, "Deployment", RELEASE);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
}

/// Non-root, read-only root, no capabilities, no escalation, RuntimeDefault seccomp, probes on
/// the admin port, resources, and a grace period covering the gateway's drain.
fn hardened(id: &str, d: &Value) {
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{id}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{id}"
    );
    assert_eq!(pod["automountServiceAccountToken"], false, "{id}");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{id}");
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{id}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{id}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{id}");
    assert!(sc["capabilities"]["add"].is_null(), "{id}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{id}");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin", "{id}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{id}");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin", "{id}");
    for part in ["requests", "limits"] {
        assert!(
            c["resources"][part]["memory"].is_string(),
            "{id}: resources.{part}.memory"
        );
    }
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{id}");

    // The gateway's shutdown deadline in `serve` is 25 s: the kubelet must wait longer.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        grace > 25,
        "{id}: terminationGracePeriodSeconds {grace} does not cover the 25 s drain"
    );

    // Every writable path is a volume: the root filesystem is read-only.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    for m in c["volumeMounts"].as_array().unwrap() {
        let v = volumes[m["name"].as_str().unwrap()];
        if m["readOnly"] != true {
            assert!(
                v.get("emptyDir").is_some() || v.get("persistentVolumeClaim").is_some(),
                "{id}: writable mount {m} is not an emptyDir or a claim"
            );
        }
        assert!(
            m.get("subPath").is_none(),
            "{id}: {m} uses subPath (no updates reach it)"
        );
    }
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/tmp"),
        "{id}: no writable /tmp"
    );

    // The config comes from the ConfigMap mounted as a directory, so its `..data` swap reaches
    // the gateway's directory watcher.
    let config_env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WA_GATEWAY_CONFIG")
        .unwrap_or_else(|| panic!("{id}: no WA_GATEWAY_CONFIG"));
    let path = Path::new(config_env["value"].as_str().unwrap());
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == path.parent().unwrap())
        .unwrap_or_else(|| panic!("{id}: nothing is mounted at {}", path.display()));
    let volume = volumes[mount["name"].as_str().unwrap()];
    assert_eq!(
        volume["configMap"]["name"],
        format!("{RELEASE}-config"),
        "{id}: {} is not the config ConfigMap",
        path.display()
    );
}

fn services_reach_the_pods(id: &str, c: &Value, d: &Value) {
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    let ports: BTreeSet<&str> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    for svc in objects(c).into_iter().filter(|o| o["kind"] == "Service") {
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(
                &pod_labels[k], v,
                "{id}: Service {} selects {k}={v}",
                svc["metadata"]["name"]
            );
        }
        for p in svc["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().unwrap();
            assert!(
                ports.contains(target),
                "{id}: Service port {target} is not a container port"
            );
        }
    }
}

#[test]
fn the_values_schema_and_the_chart_refuse_bad_values() {
    let Some(all) = rendered() else { return };
    for (what, values, expected) in bad_values() {
        let c = &all[&format!("bad: {what}")];
        let error = c["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {values} was accepted; rendered {:?}", kinds(c)));
        assert!(
            error.contains(expected),
            "{what}: the refusal does not name {expected}:\n{error}"
        );
    }
}

/// The environment the pod gets from its Secret and literal env entries.
fn pod_environment(c: &Value, d: &Value) -> BTreeMap<String, String> {
    let secret = objects(c)
        .into_iter()
        .find(|o| o["kind"] == "Secret")
        .expect("a created Secret");
    let data: BTreeMap<String, String> = secret["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"],
        "the pod's environment comes from the created Secret"
    );
    let mut env = data.clone();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_owned();
        if let Some(v) = e["value"].as_str() {
            env.insert(name, v.to_owned());
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            env.insert(name, data[key].clone());
        }
    }
    env
}

#[test]
fn the_rendered_config_passes_wa_gateway_validate() {
    let Some(all) = rendered() else { return };
    let bin = env!("CARGO_BIN_EXE_wa-gateway");
    for file in values_files() {
        let id = case_id(&file);
        let c = case(all, &format!("validate: {id}"));
        let d = find(c, "Deployment", RELEASE);
        let cm = find(c, "ConfigMap", &format!("{RELEASE}-config"));
        let yaml = cm["data"]["gateway.yaml"]
            .as_str()
            .expect("gateway.yaml in the ConfigMap");
        // The kubelet waits longer than the gateway drains: the shutdown delay and timeout
        // written into the config, plus a margin.
        let cfg: Value = serde_norway::from_str(yaml).expect("the rendered config is YAML");
        let secs = |key: &str| {
            let text = cfg["listen"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{id}: listen.{key} is not in the rendered config"));
            humantime::parse_duration(text).unwrap().as_secs() as i64
        };
        let drain = secs("shutdown_delay") + secs("shutdown_timeout");
        let grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap();
        assert!(
            grace > drain,
            "{id}: terminationGracePeriodSeconds {grace} does not cover the gateway's {drain} s shutdown"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).unwrap();
        let env = pod_environment(c, d);
        let run = |env: &BTreeMap<String, String>| {
            Command::new(bin)
                .arg("validate")
                .arg(&path)
                .env_clear()
                .envs(env)
                .output()
                .expect("run wa-gateway validate")
        };
        let out = run(&env);
        assert!(
            out.status.success(),
            "{id}: wa-gateway validate refuses the rendered config:\n{}\n--- gateway.yaml\n{yaml}",
            tools::said(&out)
        );
        // The environment matters: without the app secret or the admin token the same file is
        // refused.
        for key in ["WA_APP_SECRET", "WA_ADMIN_TOKEN"] {
            let mut without = env.clone();
            without.remove(key);
            let out = run(&without);
            let said = tools::said(&out);
            assert!(
                !out.status.success() && said.contains(key),
                "{id}: validate passed without {key}:\n{said}"
            );
        }
        admin_needs_its_token(&id, &cfg, &env, bin);
    }
}

/// Line and column (1-based) of `needle`'s first character on the first line holding it.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            line.find(needle)
                .map(|at| (i + 1, line[..at].chars().count() + 1))
        })
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
}

/// Done-when of issue 17 (validate): every rendered config passes the JSON Schema and
/// `wa-gateway validate --offline` with no environment and none of the files it names (the
/// chart's own mount paths do not exist here); on the everything-on config, offline validation
/// still names file:line:column for an undeclared agent, an unknown key and a bad duration.
#[test]
fn the_rendered_config_passes_validate_offline_without_files_or_environment() {
    let Some(all) = rendered() else { return };
    let bin = env!("CARGO_BIN_EXE_wa-gateway");
    let schema = jsonschema::validator_for(&wa_gateway::config::json_schema()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let validate = |name: &str, text: &str, json: bool| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["validate", "--offline"]);
        if json {
            cmd.args(["--format", "json"]);
        }
        cmd.arg(name)
            .current_dir(dir.path())
            .env_clear()
            .output()
            .expect("run wa-gateway validate --offline")
    };
    for file in values_files() {
        let id = case_id(&file);
        let c = case(all, &id);
        let cm = find(c, "ConfigMap", &format!("{RELEASE}-config"));
        let yaml = cm["data"]["gateway.yaml"].as_str().unwrap();
        let cfg: Value = serde_norway::from_str(yaml).unwrap();
        let errors: Vec<String> = schema
            .iter_errors(&cfg)
            .map(|e| format!("{}: {e}", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{id}: the JSON Schema refuses it: {errors:#?}\n{yaml}"
        );
        for tls in ["tls", "admin_tls"] {
            if let Some(cert) = cfg["listen"][tls]["cert"].as_str() {
                assert!(!Path::new(cert).exists(), "{id}: {cert} exists here");
            }
        }
        let out = validate("gateway.yaml", yaml, false);
        let said = tools::said(&out);
        assert!(
            out.status.success() && said.contains("not checked (--offline)"),
            "{id}: validate --offline refuses the rendered config:\n{said}\n{yaml}"
        );
        if id != "ci/everything-on-values.yaml" {
            continue;
        }
        assert!(
            said.contains("certificate files of listen.tls"),
            "{id}: {said}"
        );
        let mutated = |change: &dyn Fn(&mut Value)| {
            let mut v = cfg.clone();
            change(&mut v);
            serde_norway::to_string(&v).unwrap()
        };
        let cases: [(&str, String, &str, &str, &str); 3] = [
            (
                "undeclared agent",
                mutated(&|v| v["numbers"][0]["agent"] = json!("suport")),
                "suport",
                "numbers[0].agent",
                "\"suport\" is not declared",
            ),
            (
                "unknown key",
                mutated(&|v| v["publik_url"] = json!("https://wa.example.com/webhook")),
                "publik_url",
                "publik_url",
                "unknown key `publik_url`: did you mean `public_url`?",
            ),
            (
                "bad duration",
                mutated(&|v| v["listen"]["idle_timeout"] = json!("5 parsecs")),
                "5 parsecs",
                "listen.idle_timeout",
                "invalid duration",
            ),
        ];
        for (what, text, needle, path, message) in cases {
            let (line, column) = position_of(&text, needle);
            let out = validate("broken.yaml", &text, false);
            let said = tools::said(&out);
            let at = format!("broken.yaml:{line}:{column}: {path}: ");
            assert!(
                out.status.code() == Some(1)
                    && said
                        .lines()
                        .any(|l| l.starts_with(&at) && l.contains(message)),
                "{what}: no {at:?}… {message:?} in\n{said}"
            );
            let out = validate("broken.yaml", &text, true);
            let first: Value = serde_json::from_str(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or(""),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", tools::said(&out)));
            assert_eq!(
                (&first["file"], &first["line"], &first["column"]),
                (&json!("broken.yaml"), &json!(line), &json!(column)),
                "{what}"
            );
            assert_eq!(
                (&first["path"], &first["severity"]),
                (&json!(path), &json!("error"))
            );
        }
    }
}

/// The chart's admin listener is on the pod's network, so its config must carry a token (one is
/// generated when the values give none), and without it `wa-gateway validate` refuses the file.
fn admin_needs_its_token(id: &str, cfg: &Value, env: &BTreeMap<String, String>, bin: &str) {
    let listen = &cfg["listen"];
    assert_eq!(listen["admin"], "0.0.0.0:9090", "{id}");
    assert_eq!(
        listen["admin_token"],
        json!({ "env": "WA_ADMIN_TOKEN" }),
        "{id}: the rendered config requires the admin token"
    );
    let token = &env["WA_ADMIN_TOKEN"];
    assert!(
        token.len() >= 12,
        "{id}: admin token {token:?} is too short"
    );
    assert!(
        listen["admin_hosts"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("{RELEASE}-admin.{NAMESPACE}.svc"))),
        "{id}: {listen}"
    );
    let mut open = cfg.clone();
    open["listen"]
        .as_object_mut()
        .unwrap()
        .remove("admin_token");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, serde_norway::to_string(&open).unwrap()).unwrap();
    let out = Command::new(bin)
        .arg("validate")
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .expect("run wa-gateway validate");
    let said = tools::said(&out);
    assert!(
        !out.status.success() && said.contains("listen.admin") && said.contains("admin_token"),
        "{id}: an admin on 0.0.0.0 without a token passed validate:\n{said}"
    );
}

#[test]
fn the_default_render_generates_an_admin_token_and_notes_say_how_to_read_it() {
    let Some(all) = rendered() else { return };
    let c = case(all, "chart defaults");
    let secret = find(c, "Secret", RELEASE);
    let token = secret["stringData"]["WA_ADMIN_TOKEN"].as_str().unwrap();
    assert!(
        token.len() == 48 && token.chars().all(|ch| ch.is_ascii_alphanumeric()),
        "a generated token: {token:?}"
    );
    let notes = c["rendered"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("NOTES.txt"))
        .map(|(_, v)| v.as_str().unwrap())
        .expect("NOTES.txt rendered");
    assert!(
        notes.contains("jsonpath='{.data.WA_ADMIN_TOKEN}'")
            && notes.contains("kept across upgrades"),
        "{notes}"
    );
    assert!(!notes.contains(token), "NOTES never print the token");
}

/// `wa_gateway_…` names in a PromQL expression or any text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("wa_gateway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Names the gateway defines (a histogram's series count too).
fn assert_defined(what: &str, names: &BTreeSet<String>) {
    let m = wa_gateway::metrics::Metrics::new();
    let defined: BTreeSet<&str> = m.family_names().iter().map(String::as_str).collect();
    for name in names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| defined.contains(b))
            .unwrap_or(name);
        assert!(
            defined.contains(base),
            "{what} reads {name}, which src/metrics.rs does not define"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(all) = rendered() else { return };
    let Some(promtool) = tools::promtool() else {
        return;
    };
    let rule = find(
        case(all, "ci/everything-on-values.yaml"),
        "PrometheusRule",
        RELEASE,
    );
    let groups = &rule["spec"]["groups"];
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_norway::to_string(&json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    let tests_src = chart_dir().join("tests/alerts.test.yaml");
    let tests = dir.path().join("alerts.test.yaml");
    std::fs::copy(&tests_src, &tests).unwrap();

    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        tools::said(&out)
    );
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}",
        tools::said(&out)
    );

    // The alerts the issue asks for, each shown firing and shown quiet by the unit tests.
    let alerts: BTreeSet<String> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect();
    let wanted: BTreeSet<String> = [
        "WaGatewayNumberError",
        "WaGatewaySignatureFailures",
        "WaGatewayOutboxBacklog",
        "WaGatewayDeliveryFailures",
        "WaGatewayReloadFailing",
        "WaGatewayCertificateExpiring",
        "WaGatewayGraphApiVersionExpiring",
        "WaGatewayReconcileDrift",
        "WaGatewayNoLeader",
        "WaGatewayStorageGrowing",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(alerts, wanted);
    let unit: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&tests_src).unwrap()).unwrap();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in unit["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_owned();
            if a["exp_alerts"].as_sequence().is_some_and(|s| s.is_empty()) {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    assert_eq!(fires, wanted, "alerts without a test showing them fire");
    assert_eq!(quiet, wanted, "alerts without a test showing them quiet");

    let exprs: String = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let names = metric_names(&exprs);
    assert!(names.len() >= 8, "{names:?}");
    assert_defined("an alert rule", &names);
}

#[test]
fn the_dashboard_reads_only_metrics_the_gateway_defines() {
    let Some(all) = rendered() else { return };
    let cm = find(
        case(all, "ci/everything-on-values.yaml"),
        "ConfigMap",
        &format!("{RELEASE}-dashboard"),
    );
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = cm["data"]["wa-gateway.json"]
        .as_str()
        .expect("the dashboard JSON");
    let dashboard: Value = serde_json::from_str(text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "wa-gateway");
    let mut exprs = String::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let names = metric_names(&exprs);
    assert_defined("the dashboard", &names);
    // Every alert's metric has a panel too.
    for needed in [
        "wa_gateway_number_status",
        "wa_gateway_webhooks_total",
        "wa_gateway_outbox_oldest_age_seconds",
        "wa_gateway_messages_out_total",
        "wa_gateway_config_last_reload_successful",
        "wa_gateway_tls_cert_expiry_timestamp_seconds",
        "wa_gateway_reconcile_drift",
        "wa_gateway_leader",
    ] {
        assert!(names.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn chart_kube_version_names_the_tested_range() {
    let chart: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    let next_minor = |v: &str| {
        let mut parts = v.split('.');
        let (major, minor) = (
            parts.next().unwrap(),
            parts.next().unwrap().parse::<u32>().unwrap(),
        );
        format!("{major}.{}.0", minor + 1)
    };
    assert_eq!(
        chart["kubeVersion"].as_str(),
        Some(
            format!(
                ">={}-0 <{}-0",
                KUBE_VERSIONS[0],
                next_minor(KUBE_VERSIONS[1])
            )
            .as_str()
        ),
        "Chart.yaml's kubeVersion and the versions validated here must agree"
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_with_the_ci_script() {
    let Some(python) = tools::chart_python() else {
        return;
    };
    let hadolint = python.with_file_name("hadolint");
    let out = Command::new(&hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", hadolint.display()));
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "hadolint:\n{}",
        tools::said(&out)
    );
    // The image ships what CI builds: the same script, whose command is `--locked`.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let script = std::fs::read_to_string(repo().join(".ci/build-release")).unwrap();
    assert!(
        dockerfile.contains(".ci/build-release"),
        "the Dockerfile builds some other way"
    );
    assert!(
        script.contains("cargo build --profile dist --locked"),
        "{script}"
    );
}
