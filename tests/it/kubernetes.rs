//! deploy/kubernetes/: the native-sidecar contract (PRODUCT.md §10) read from the manifests
//! themselves, the shipped policy checked by the real binary, and the sidecar's own command
//! line run as the pod would run it (CA from a Secret-like 0440 directory, read-only
//! policy mount, state in a writable directory), until it serves an inspected request.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

fn to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn load(file: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(DIR).join(file)).expect("read manifest");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    assert_eq!(docs.len(), 1, "{file}: one document");
    to_json(&docs[0])
}

fn pod() -> Value {
    let d = load("deployment.yaml");
    assert_eq!(d["kind"], "Deployment");
    d["spec"]["template"]["spec"].clone()
}

fn sidecar(pod: &Value) -> Value {
    let inits = pod["initContainers"].as_array().expect("initContainers");
    inits
        .iter()
        .find(|c| c["name"] == "llm-egress")
        .expect("the sidecar is an init container")
        .clone()
}

/// `--name=value` of the sidecar's args.
fn arg(c: &Value, name: &str) -> Option<String> {
    c["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_owned))
}

/// The volume mounted at the deepest mount of `c` that holds `path`.
fn volume_at(pod: &Value, c: &Value, path: &str) -> Value {
    let mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .filter(|m| {
            let at = m["mountPath"].as_str().unwrap_or_default();
            path == at || path.starts_with(&format!("{at}/"))
        })
        .max_by_key(|m| m["mountPath"].as_str().unwrap_or_default().len())
        .unwrap_or_else(|| panic!("{} mounts nothing at {path}", c["name"]));
    volume(pod, &mount["name"])
}

/// The pod's volume called `name`.
fn volume(pod: &Value, name: &Value) -> Value {
    pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == *name)
        .unwrap_or_else(|| panic!("no volume {name}"))
        .clone()
}

fn env(c: &Value, name: &str) -> String {
    c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{} has no {name}", c["name"]))
        .to_owned()
}

#[test]
fn the_sidecar_is_native_probed_and_locked_down() {
    let pod = pod();
    let s = sidecar(&pod);
    assert_eq!(s["restartPolicy"], "Always", "native sidecar");
    let admin = arg(&s, "admin").expect("--admin");
    let admin_port: i64 = admin.rsplit(':').next().unwrap().parse().unwrap();
    let port_of = |probe: &str| {
        let p = &s[probe]["httpGet"]["port"];
        s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == *p || x["containerPort"] == *p)
            .map(|x| x["containerPort"].as_i64().unwrap())
            .unwrap_or_else(|| panic!("{probe} port {p}"))
    };
    assert_eq!(s["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(port_of("startupProbe"), admin_port);
    assert_eq!(s["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(s["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(port_of("livenessProbe"), admin_port);
    // The proxy port stays inside the pod.
    assert!(arg(&s, "listen").unwrap().starts_with("127.0.0.1:"));
    let sc = &s["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert!(s["resources"]["limits"]["memory"].is_string());
}

#[test]
fn policies_come_from_a_configmap_and_the_ca_key_from_a_secret_only_the_sidecar_mounts() {
    let pod = pod();
    let s = sidecar(&pod);
    let kust = load("kustomization.yaml");
    let policy = volume_at(&pod, &s, &arg(&s, "policy").expect("--policy"));
    let generated = kust["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == policy["configMap"]["name"])
        .expect("the policy ConfigMap is generated by kustomization.yaml");
    assert_eq!(kust["generatorOptions"]["disableNameSuffixHash"], true);
    for f in generated["files"].as_array().unwrap() {
        assert!(Path::new(DIR).join(f.as_str().unwrap()).is_file(), "{f}");
    }
    let ca = volume_at(&pod, &s, &arg(&s, "ca-dir").expect("--ca-dir"));
    let secret = ca["secret"]["secretName"]
        .as_str()
        .expect("CA from a Secret");
    assert_eq!(ca["secret"]["defaultMode"], 0o440, "0440 under fsGroup");
    // State (audit log, chain key) on a writable volume, not in the read-only mounts.
    for a in ["certs", "audit"] {
        let v = volume_at(&pod, &s, &arg(&s, a).unwrap());
        assert!(v.get("emptyDir").is_some() || v.get("persistentVolumeClaim").is_some());
    }
    // No other container mounts the Secret.
    for c in pod["containers"].as_array().unwrap() {
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let v = volume(&pod, &m["name"]);
            assert_ne!(
                v["secret"]["secretName"], secret,
                "{} mounts the CA key",
                c["name"]
            );
        }
    }
}

#[test]
fn the_app_is_pointed_at_the_sidecar_and_trusts_its_ca() {
    let pod = pod();
    let s = sidecar(&pod);
    let app = &pod["containers"][0];
    let listen = arg(&s, "listen").unwrap();
    assert_eq!(env(app, "HTTPS_PROXY"), format!("http://{listen}"));
    let no_proxy = env(app, "NO_PROXY");
    for h in ["localhost", "127.0.0.1", ".svc", ".cluster.local"] {
        assert!(no_proxy.split(',').any(|x| x == h), "NO_PROXY lacks {h}");
    }
    for var in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"] {
        let path = env(app, var);
        let v = volume_at(&pod, app, &path);
        assert!(
            v["configMap"]["name"].is_string(),
            "{var} must come from the public CA ConfigMap, not the Secret: {v}"
        );
    }
}

#[test]
fn the_shipped_sidecar_policy_passes_check() {
    let out = Command::new(bin())
        .args(["check", "--policy", &format!("{DIR}/policies")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sidecar's args with the pod's mount paths mapped into `root`, ports ephemeral.
fn pod_args(s: &Value, root: &Path) -> Vec<String> {
    let map = [
        (
            "/etc/llm-egress/policies",
            PathBuf::from(DIR).join("policies"),
        ),
        ("/etc/llm-egress/ca", root.join("ca")),
        ("/var/lib/llm-egress", root.join("state")),
    ];
    let mut out = vec!["--log-format".to_owned(), "json".to_owned()];
    for a in s["args"].as_array().unwrap() {
        let mut a = a.as_str().unwrap().to_owned();
        for (from, to) in &map {
            a = a.replace(from, to.to_str().unwrap());
        }
        if a.starts_with("--listen=") || a.starts_with("--admin=") {
            a = format!("{}=127.0.0.1:0", a.split('=').next().unwrap());
        }
        out.push(a);
    }
    out
}

#[test]
fn the_sidecars_command_line_serves_with_a_secret_mode_ca_and_refuses_a_world_readable_one() {
    let pod = pod();
    let s = sidecar(&pod);
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let init = Command::new(bin())
        .args(["ca", "init", "--certs"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(init.status.success());
    std::fs::create_dir_all(tmp.path().join("state")).unwrap();
    let chmod = |mode| {
        for f in ["ca.key", "ca.pem"] {
            std::fs::set_permissions(ca.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    chmod(0o440);
    let args = pod_args(&s, tmp.path());
    let mut proc = Proc::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let (proxy, admin) = proc.wait_for("listening", listening_addrs);
    let curl = |args: &[&str]| {
        let out = Command::new("curl").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(
        curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{admin}/readyz")
        ]),
        "200"
    );
    // An inspected request: TLS with a leaf minted from the Secret's CA, refused by the
    // policy before anything leaves (no network needed).
    let status = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--proxy",
        &format!("http://{proxy}"),
        "--cacert",
        ca.join("ca.pem").to_str().unwrap(),
        "-X",
        "POST",
        "https://api.openai.com/not-the-api",
    ]);
    assert_eq!(status, "403", "{}", proc.output());
    // The CA directory was only read.
    let mut names: Vec<_> = std::fs::read_dir(&ca)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.key", "ca.pem"]);
    assert!(tmp.path().join("state/audit/audit.jsonl").is_file());
    drop(proc);

    // Without the flag a 0440 key is refused; with it, a world-readable one still is.
    let strict: Vec<_> = args
        .iter()
        .filter(|a| *a != "--ca-key-group-readable")
        .collect();
    let out = Command::new(bin()).args(&strict).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by group or others"));
    chmod(0o444);
    let out = Command::new(bin()).args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CA key is readable by others"), "{err}");
    assert!(
        !err.contains("PRIVATE KEY"),
        "the key never appears in errors"
    );
}

#[test]
fn ca_key_group_readable_needs_an_explicit_ca_dir() {
    let out = Command::new(bin())
        .args(["run", "--ca-key-group-readable"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-dir"));
}
