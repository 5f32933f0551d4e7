//! ConfigMaps and Secrets end to end: kept by `apply` in podkit's object store, read by pods
//! into env (`configMapKeyRef`, `secretKeyRef`, `envFrom`) and volumes (`configMap`, `secret`,
//! `projected`) as kubelet reads them, volumes updated atomically when an object changes, a
//! pod waiting for a missing object with kubelet's reasons, and `delete -f` leaving nothing.
//! Pods of host processes: what is tested is podkit's, not a runtime's.

mod common;
use common::Isolated as Env;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

impl Env {
    fn pod_json(&self, pod: &str) -> Value {
        let out = self.podkit(&["get", "pod", pod, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn wait_for(&self, pod: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let json = self.pod_json(pod);
            if check(&json) {
                return json;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {json}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn events(&self, pod: &str) -> String {
        std::fs::read_to_string(
            self.state()
                .join("pods")
                .join(format!("default_{pod}"))
                .join("events.json"),
        )
        .unwrap_or_default()
    }

    fn volume(&self, pod: &str, volume: &str) -> PathBuf {
        self.state()
            .join("pods")
            .join(format!("default_{pod}"))
            .join("volumes")
            .join(volume)
    }
}

/// Deletes the pod when the test ends, also when it failed.
struct Cleanup<'a>(&'a Env, String);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .podkit(&["delete", "pod", &self.1, "--grace-period", "0"]);
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn waiting(json: &Value, container: &str) -> (String, String) {
    let statuses = json["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let status = statuses
        .iter()
        .find(|c| c["name"] == container)
        .cloned()
        .unwrap_or(Value::Null);
    let w = &status["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or("").to_owned(),
        w["message"].as_str().unwrap_or("").to_owned(),
    )
}

fn running(json: &Value, container: &str) -> bool {
    json["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == container && !c["state"]["running"].is_null())
}

/// A 64 KiB value of one repeated letter: a read of a volume file that mixes two versions, or
/// stops short, cannot pass for one.
fn big(version: u8) -> String {
    String::from_utf8(vec![b'a' + version % 26; 64 * 1024]).expect("ascii")
}

/// One file with a ConfigMap, a Secret (stringData and base64 data) and a pod reading both
/// into env and into configMap, secret and projected volumes; then the ConfigMap updated while
/// a reader loops over its volume's file (never a torn read), `get` and `describe` of both
/// kinds, and `delete -f` of the file leaving no object, pod or mount.
#[test]
fn config_maps_and_secrets_reach_env_and_volumes() {
    let Some(env) = Env::new() else { return };
    let pod = format!("obj-{}", std::process::id());
    let out_dir = env.tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let manifest = |version: u8| {
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config, labels: {{app: web}}}}
data:
  greeting: hello
  config.yaml: |
    port: 8080
    debug: true
  big: {big}
binaryData:
  blob: AAEC
---
apiVersion: v1
kind: Secret
metadata: {{name: db}}
type: Opaque
stringData: {{password: hunter2}}
data: {{token: c2VjcmV0LXRva2Vu}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap: {{name: app-config}}
  - name: some
    configMap:
      name: app-config
      defaultMode: 0600
      items: [{{key: greeting, path: sub/hello.txt, mode: 0640}}]
  - name: creds
    secret: {{secretName: db, defaultMode: 0400}}
  - name: both
    projected:
      sources:
      - configMap: {{name: app-config, items: [{{key: greeting, path: greeting}}]}}
      - secret: {{name: db, items: [{{key: password, path: pw}}]}}
      - downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}
      - configMap: {{name: not-there, optional: true}}
  containers:
  - name: app
    command: [sh, -c, 'env > {out}/env; cat /etc/cfg/config.yaml > {out}/config; cat /etc/creds/password > {out}/pw; exec sleep 1000']
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: app-config, key: greeting}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: db, key: password}}}}
    - name: NOT_SET
      valueFrom: {{configMapKeyRef: {{name: nowhere, key: x, optional: true}}}}
    - name: EXPANDED
      value: 'said $(GREETING)'
    envFrom:
    - configMapRef: {{name: app-config}}
      prefix: CFG_
    - secretRef: {{name: db}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: creds, mountPath: /etc/creds}}
    - {{name: some, mountPath: /etc/some}}
    - {{name: both, mountPath: /etc/both}}
",
            big = big(version),
            out = out_dir.display(),
        )
    };
    let file = env.file("app.yaml", &manifest(0));
    let _cleanup = Cleanup(&env, pod.clone());
    let applied = env.podkit(&["apply", "-f", &file]);
    let said = String::from_utf8_lossy(&applied.stdout).into_owned();
    let noted = String::from_utf8_lossy(&applied.stderr).into_owned();
    assert!(applied.status.success(), "apply: {said}{noted}");
    assert!(said.contains("configmap/app-config created"), "{said}");
    assert!(said.contains("secret/db created"), "{said}");
    assert!(
        noted.contains("ServiceAccount/web: ignored:"),
        "an ignored kind is named: {noted}"
    );

    // Env: key references, envFrom with and without a prefix, an optional key left out, a
    // literal expanded against a referenced value.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out_dir.join("pw").exists() {
        assert!(Instant::now() < deadline, "the container wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let environ = std::fs::read_to_string(out_dir.join("env")).expect("env");
    for line in [
        "GREETING=hello",
        "PASSWORD=hunter2",
        "EXPANDED=said hello",
        "CFG_greeting=hello",
        "password=hunter2",
        "token=secret-token",
    ] {
        assert!(environ.lines().any(|l| l == line), "{line} in: {environ}");
    }
    assert!(!environ.contains("NOT_SET"), "{environ}");
    assert!(
        !environ.contains("CFG_blob"),
        "binaryData is not env, as under kubelet"
    );
    // Volumes, as the container saw them and as they are on the host.
    assert_eq!(
        std::fs::read_to_string(out_dir.join("config")).expect("config"),
        "port: 8080\ndebug: true\n"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("pw")).expect("pw"),
        "hunter2"
    );
    let cfg = env.volume(&pod, "cfg");
    assert_eq!(std::fs::read(cfg.join("blob")).expect("blob"), [0, 1, 2]);
    assert_eq!(
        std::fs::read_link(cfg.join("greeting")).expect("a link"),
        Path::new("..data/greeting")
    );
    assert_eq!(mode(&cfg.join("greeting")), 0o644);
    let some = env.volume(&pod, "some");
    assert_eq!(
        std::fs::read_to_string(some.join("sub/hello.txt")).expect("item"),
        "hello"
    );
    assert_eq!(mode(&some.join("sub/hello.txt")), 0o640);
    assert!(!some.join("greeting").exists(), "only the items");
    let creds = env.volume(&pod, "creds");
    assert_eq!(mode(&creds.join("password")), 0o400);
    assert_eq!(
        std::fs::read_to_string(creds.join("token")).expect("token"),
        "secret-token"
    );
    let both = env.volume(&pod, "both");
    assert_eq!(
        std::fs::read_to_string(both.join("greeting")).expect("read"),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(both.join("pw")).expect("read"),
        "hunter2"
    );
    assert_eq!(
        std::fs::read_to_string(both.join("name")).expect("read"),
        pod
    );
    // Secrets and projected volumes on a tmpfs of their own, configMaps on disk.
    let mounted = mounts_under(&env.state());
    assert!(
        mounted.iter().any(|m| m.ends_with("/volumes/creds")),
        "{mounted:?}"
    );
    assert!(
        mounted.iter().any(|m| m.ends_with("/volumes/both")),
        "{mounted:?}"
    );
    assert!(
        !mounted.iter().any(|m| m.ends_with("/volumes/cfg")),
        "{mounted:?}"
    );
    // The store: Secrets for root only.
    let secrets = env.storage().join("objects/default/secrets");
    assert_eq!(mode(&secrets), 0o700);
    assert_eq!(mode(&secrets.join("db.json")), 0o600);

    // get and describe, as kubectl shows them; a Secret's values never.
    let table = env.ok(&["get", "cm,secret"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("app-config") && l.split_whitespace().nth(1) == Some("4")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).eq(["db", "Opaque", "2"])),
        "{table}"
    );
    let described = env.ok(&["describe", "secret", "db"]);
    assert!(described.contains("password:  7 bytes"), "{described}");
    assert!(!described.contains("hunter2"), "{described}");
    let pod_described = env.ok(&["describe", "pod", &pod]);
    for line in [
        "PASSWORD:  <set to the key 'password' in secret 'db'>  Optional: false",
        "app-config  ConfigMap with prefix 'CFG_'  Optional: false",
        "Type:         Secret (a volume populated by a Secret)",
        "Sources:      ConfigMap app-config, Secret db, DownwardAPI, ConfigMap not-there",
    ] {
        assert!(pod_described.contains(line), "{line} in: {pod_described}");
    }
    assert!(!pod_described.contains("hunter2"), "{pod_described}");
    let yaml = env.ok(&["get", "cm", "app-config", "-o", "yaml"]);
    assert!(yaml.contains("greeting: hello"), "{yaml}");
    assert!(yaml.contains("uid:"), "{yaml}");
    assert_eq!(env.ok(&["get", "secrets", "-o", "name"]), "secret/db\n");

    // The ConfigMap changes while a reader loops over its volume's file: each read is one
    // whole version, and the last version arrives.
    let big_file = cfg.join("big");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let path = big_file.clone();
        std::thread::spawn(move || {
            let (mut reads, mut seen) = (0u32, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // The link may lead into a directory removed meanwhile: no read, not a torn one.
                let Ok(text) = std::fs::read(&path) else {
                    continue;
                };
                assert_eq!(text.len(), 64 * 1024, "a read of the wrong size");
                assert!(
                    text.iter().all(|b| *b == text[0]),
                    "a read mixing two versions"
                );
                seen.insert(text[0]);
                reads += 1;
            }
            (reads, seen)
        })
    };
    for version in 1..=8u8 {
        let changed = env.ok(&["apply", "-f", &env.file("app.yaml", &manifest(version))]);
        assert!(
            changed.contains("configmap/app-config configured"),
            "{changed}"
        );
        assert!(changed.contains("secret/db unchanged"), "{changed}");
        assert!(
            changed.contains(&format!("pod/{pod} unchanged")),
            "{changed}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read(&big_file)
            .ok()
            .and_then(|t| t.first().copied())
            != Some(b'a' + version)
        {
            assert!(
                Instant::now() < deadline,
                "version {version} never reached the volume"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, seen) = reader.join().expect("no torn read");
    assert!(reads > 8 && seen.len() > 2, "{reads} reads saw {seen:?}");
    // One data directory left: the old ones are removed as they are replaced.
    let data_dirs = std::fs::read_dir(&cfg)
        .expect("cfg")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("..20"))
        .count();
    assert_eq!(data_dirs, 1);

    // The whole file deleted: the pod, the objects, the mounts.
    let deleted = env.ok(&["delete", "-f", &file]);
    assert!(
        deleted.contains("configmap \"app-config\" deleted"),
        "{deleted}"
    );
    assert!(deleted.contains("secret \"db\" deleted"), "{deleted}");
    assert!(
        !env.state()
            .join("pods")
            .join(format!("default_{pod}"))
            .exists()
    );
    assert_eq!(mounts_under(&env.state()), Vec::<String>::new());
    assert!(!secrets.join("db.json").exists());
    let none = env.podkit(&["get", "cm"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found"));
}

/// A container whose env names a ConfigMap that is not there waits in
/// CreateContainerConfigError with kubelet's message (apply says so at once), and starts when
/// the ConfigMap is applied; a pod whose secret volume's Secret is missing waits in
/// ContainerCreating with kubelet's FailedMount event, and starts when it comes.
#[test]
fn a_missing_object_keeps_its_pod_waiting_until_it_comes() {
    let Some(env) = Env::new() else { return };
    let base = format!("late-{}", std::process::id());
    let (env_pod, vol_pod) = (format!("{base}-env"), format!("{base}-vol"));
    let pods = env.file(
        "pods.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: {env_pod}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sh, -c, 'exec sleep 1000']
    env:
    - name: LEVEL
      valueFrom: {{configMapKeyRef: {{name: late, key: level}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {vol_pod}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: tls
    secret: {{secretName: late-tls}}
  containers:
  - name: app
    command: [sh, -c, 'exec sleep 1000']
    volumeMounts: [{{name: tls, mountPath: /etc/tls}}]
"
        ),
    );
    let _a = Cleanup(&env, env_pod.clone());
    let _b = Cleanup(&env, vol_pod.clone());
    let applied = env.podkit(&["apply", "-f", &pods]);
    let stderr = String::from_utf8_lossy(&applied.stderr).into_owned();
    assert_eq!(applied.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CreateContainerConfigError: configmap \"late\" not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "MountVolume.SetUp failed for volume \"tls\" : secret \"late-tls\" not found"
        ),
        "{stderr}"
    );
    let json = env.pod_json(&env_pod);
    assert_eq!(
        waiting(&json, "app"),
        (
            "CreateContainerConfigError".to_owned(),
            "configmap \"late\" not found".to_owned()
        )
    );
    assert!(
        env.events(&env_pod)
            .contains("Error: configmap \\\"late\\\" not found")
    );
    assert!(env.events(&vol_pod).contains("FailedMount"));

    // The ConfigMap without the key: kubelet's message for the key.
    let cm = |data: &str| {
        env.file(
            "cm.yaml",
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: late}}\ndata: {data}\n"),
        )
    };
    env.ok(&["apply", "-f", &cm("{other: x}")]);
    env.wait_for(&env_pod, "the missing key", |j| {
        waiting(j, "app").1 == "couldn't find key level in ConfigMap default/late"
    });
    env.ok(&["apply", "-f", &cm("{level: debug}")]);
    env.wait_for(&env_pod, "the container to start", |j| running(j, "app"));
    let pid: i32 = std::fs::read_to_string(
        env.state()
            .join("pods")
            .join(format!("default_{env_pod}"))
            .join("members/app.pid"),
    )
    .expect("pid")
    .trim()
    .parse()
    .expect("a pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        environ.split(|b| *b == 0).any(|v| v == b"LEVEL=debug"),
        "{}",
        String::from_utf8_lossy(&environ)
    );

    let secret = env.file(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: late-tls}\ntype: kubernetes.io/tls\nstringData: {tls.crt: CERT, tls.key: KEY}\n",
    );
    env.ok(&["apply", "-f", &secret]);
    env.wait_for(&vol_pod, "the pod with the secret volume to start", |j| {
        running(j, "app")
    });
    assert_eq!(
        std::fs::read_to_string(env.volume(&vol_pod, "tls").join("tls.key")).expect("key"),
        "KEY"
    );
    env.ok(&["delete", "-f", &pods]);
    env.ok(&["delete", "cm", "late"]);
    env.ok(&["delete", "secret", "late-tls"]);
    assert_eq!(mounts_under(&env.state()), Vec::<String>::new());
    let gone = env.podkit(&["delete", "cm", "late"]);
    assert_eq!(gone.status.code(), Some(1));
}

/// An immutable ConfigMap cannot change: apply refuses it, naming it.
#[test]
fn an_immutable_config_map_is_refused_a_change() {
    let Some(env) = Env::new() else { return };
    let cm = |value: &str| {
        env.file(
            "frozen.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: frozen, namespace: shop}}\nimmutable: true\ndata: {{a: '{value}'}}\n"
            ),
        )
    };
    assert!(
        env.ok(&["apply", "-f", &cm("1")])
            .contains("configmap/frozen created")
    );
    let refused = env.podkit(&["apply", "-f", &cm("2")]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("ConfigMap \"frozen\" in namespace \"shop\" is immutable"),
        "{said}"
    );
    let listed = env.ok(&["get", "cm", "-n", "shop"]);
    assert!(listed.contains("frozen"), "{listed}");
    let all = env.ok(&["get", "cm", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
}

/// A PersistentVolumeClaim is a directory under podkit's storage, Bound when applied: a pod
/// writes to it, is deleted, and a new pod finds the data; the claim cannot be deleted while
/// a pod mounts it, and takes its data with it when deleted. A pod whose claim is missing waits
/// for it.
#[test]
fn a_claim_keeps_its_data_across_pods() {
    let Some(env) = Env::new() else { return };
    let pod = format!("pvc-{}", std::process::id());
    let claim = format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {pod}-data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
"
    );
    let pod_doc = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {pod}-data}}
  containers:
  - name: app
    command: [sh, -c, 'echo run >> /var/lib/app/runs; exec sleep 1000']
    volumeMounts: [{{name: data, mountPath: /var/lib/app}}]
"
    );
    let _cleanup = Cleanup(&env, pod.clone());
    // The pod before its claim: it waits, and starts when the claim is applied.
    let pod_file = env.file("pod.yaml", &pod_doc);
    let applied = env.podkit(&["apply", "-f", &pod_file]);
    let said = String::from_utf8_lossy(&applied.stderr).into_owned();
    assert!(
        said.contains(&format!("persistentvolumeclaim \"{pod}-data\" not found")),
        "{said}"
    );
    let claim_file = env.file("claim.yaml", &claim);
    assert!(env.ok(&["apply", "-f", &claim_file]).contains("created"));
    env.wait_for(&pod, "the pod to start once its claim is there", |j| {
        running(j, "app")
    });
    let volume = env.storage().join(format!("volumes/default/{pod}-data"));
    let runs = volume.join("runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&runs).unwrap_or_default() != "run\n" {
        assert!(
            Instant::now() < deadline,
            "the pod wrote nothing to its claim"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let table = env.ok(&["get", "pvc"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&format!("{pod}-data")))
        .expect("the claim listed")
        .split_whitespace()
        .collect();
    assert_eq!(row[1], "Bound", "{table}");
    assert!(row[2].starts_with("pvc-"), "{table}");
    assert_eq!(&row[3..5], ["1Gi", "RWO"], "{table}");
    let described = env.ok(&["describe", "pvc", &format!("{pod}-data")]);
    assert!(
        described.contains(&format!("Used By:       {pod}")),
        "{described}"
    );
    // Not deleted under a running pod.
    let refused = env.podkit(&["delete", "pvc", &format!("{pod}-data")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use by pod"));
    assert!(runs.exists());
    // A new pod finds the data.
    env.ok(&["delete", "pod", &pod]);
    env.ok(&["apply", "-f", &pod_file]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&runs).unwrap_or_default() != "run\nrun\n" {
        assert!(
            Instant::now() < deadline,
            "the second pod did not find the data"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its spec cannot change, but for its size.
    let changed = env.file(
        "claim2.yaml",
        &claim.replace("ReadWriteOnce", "ReadWriteMany"),
    );
    let refused = env.podkit(&["apply", "-f", &changed]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("spec is immutable after creation"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let bigger = env.file("claim3.yaml", &claim.replace("1Gi", "2Gi"));
    assert!(env.ok(&["apply", "-f", &bigger]).contains("configured"));
    env.ok(&["delete", "pod", &pod]);
    let deleted = env.ok(&["delete", "pvc", &format!("{pod}-data")]);
    assert!(deleted.contains("deleted"), "{deleted}");
    assert!(!volume.exists(), "the claim's data goes with it");
    assert_eq!(mounts_under(&env.state()), Vec::<String>::new());
}

/// A NetworkPolicy is kept, listed and described as kubectl shows it, and said NOT ENFORCED
/// everywhere a user looks: `apply`'s note, `get`'s ENFORCED column, `describe` of the policy
/// (with the pods it selects) and of each pod it selects. A malformed one is refused naming
/// the field; `delete -f` removes it.
#[test]
fn network_policies_are_kept_and_said_not_enforced() {
    let Some(env) = Env::new() else { return };
    let pod = format!("np-web-{}", std::process::id());
    let file = env.file(
        "policies.yaml",
        &format!(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-ingress}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{role: frontend}}}}}}]
    ports: [{{protocol: TCP, port: 80}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-all}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: only-db}}
spec:
  podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [db]}}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  labels: {{app: web}}
  annotations: {{podkit.io/host-process: 'true'}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    command: [sleep, '1000']
"
        ),
    );
    let _cleanup = Cleanup(&env, pod.clone());
    let out = env.podkit(&["apply", "-f", &file]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("networkpolicy.networking.k8s.io/web-ingress created")
            && said.contains("NetworkPolicy/web-ingress: kept, NOT ENFORCED"),
        "{said}"
    );

    let table = env.ok(&["get", "netpol"]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(row("web-ingress")[1..3], ["app=web", "no"], "{table}");
    assert_eq!(row("deny-all")[1..3], ["<none>", "no"], "{table}");
    assert_eq!(
        row("only-db")[1..5],
        ["tier", "in", "(db)", "no"],
        "{table}"
    );
    // Kept as the API server keeps it: policyTypes defaulted.
    let yaml = env.ok(&["get", "networkpolicy", "web-ingress", "-o", "json"]);
    let json: Value = serde_json::from_str(&yaml).expect("json");
    assert_eq!(
        json["spec"]["policyTypes"],
        serde_json::json!(["Ingress"]),
        "{json}"
    );

    let described = env.ok(&["describe", "netpol", "web-ingress"]);
    for line in [
        "Enforced:     no: podkit filters no traffic between pods",
        "  PodSelector:     app=web",
        "  Allowing ingress traffic:",
        "    To Port: 80/TCP",
        "      PodSelector: role=frontend",
        "  Not affecting egress traffic",
        "  Policy Types: Ingress",
        &format!("Selected Pods:  {pod}"),
    ] {
        assert!(described.contains(line), "{line:?} in {described}");
    }
    let described = env.ok(&["describe", "netpol", "deny-all"]);
    assert!(
        described.contains("<none> (Selected pods are isolated for egress connectivity)"),
        "{described}"
    );
    let described = env.ok(&["describe", "netpol", "only-db"]);
    assert!(described.contains("Selected Pods:  <none>"), "{described}");
    // The pod says which policies select it, and that they are not enforced.
    let described = env.ok(&["describe", "pod", &pod]);
    assert!(
        described.contains("Network Policies:  deny-all, web-ingress (NOT ENFORCED"),
        "{described}"
    );

    // A malformed one: refused, naming the field.
    let bad = env.file(
        "bad.yaml",
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sideways}
spec:
  podSelector: {}
  policyTypes: [Sideways]
",
    );
    let out = env.podkit(&["apply", "-f", &bad]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("spec.policyTypes[0]") && said.contains("Sideways"),
        "{said}"
    );

    env.ok(&["delete", "-f", &file]);
    let table = env.ok(&["get", "netpol"]);
    assert!(!table.contains("web-ingress"), "{table}");
}
