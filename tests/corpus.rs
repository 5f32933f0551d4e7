//! Public manifests through podkit's validation: every pod spec in `tests/corpus` (Pods, and the
//! pod templates of Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicaSets and
//! ReplicationControllers, each wrapped as a Pod with the template's metadata), read as
//! `podkit apply --dry-run` reads a Pod. Prints how many are accepted and the refused fields by
//! count (README's figure: `cargo test --test corpus -- --nocapture`), and fails when fewer are
//! accepted than [`ACCEPTED_AT_LEAST`]: a field podkit stopped honouring. The files, their
//! sources and licences: tests/corpus/README.md.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

/// Pod specs accepted when this was last raised (README has the figure).
const ACCEPTED_AT_LEAST: usize = 191;

/// Whole files accepted by `apply` when this was last raised.
const WHOLE_FILES_AT_LEAST: usize = 164;

/// Kinds whose pod template is at `spec.template`.
const TEMPLATED: [&str; 6] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "ReplicationController",
];

#[test]
fn public_manifests_are_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let (mut accepted, mut refused, mut unparsable) = (0usize, 0usize, 0usize);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut fields: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let mut options = serde_saphyr::Options::default();
        // YAML 1.1's octal, as kubectl (and podkit) read manifests.
        options.legacy_octal_numbers = true;
        let Ok(documents) = serde_saphyr::from_multiple_with_options::<Value>(&text, options)
        else {
            // Kept on purpose: files whose upstream text is not YAML (tests/corpus/README.md).
            unparsable += 1;
            continue;
        };
        for document in documents {
            let Some((kind, pod)) = as_pod(&document) else {
                continue;
            };
            *kinds.entry(kind).or_default() += 1;
            let yaml = serde_json::to_string(&pod).expect("json");
            match podkit::spec::parse("corpus.yaml", &yaml) {
                Ok(_) => accepted += 1,
                Err(err) => {
                    refused += 1;
                    if std::env::var_os("CORPUS_VERBOSE").is_some() {
                        println!("{}: {err}", file.display());
                    }
                    let mut seen: Vec<String> =
                        err.to_string().lines().filter_map(field_of).collect();
                    seen.sort();
                    seen.dedup();
                    for field in seen {
                        *fields.entry(field).or_default() += 1;
                    }
                }
            }
        }
    }
    let total = accepted + refused;
    println!(
        "pod specs: {total} in {} files ({kinds:?}); accepted {accepted} ({}%), refused {refused}; \
         files that are not YAML: {unparsable}",
        files.len(),
        100 * accepted / total.max(1)
    );
    let mut by_count: Vec<(&String, &usize)> = fields.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (field, n) in by_count {
        println!("{n:4}  {field}");
    }
    // Whole files, as `podkit apply -f FILE` takes them: every document of the file accepted.
    let whole = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            let parsed = podkit::spec::parse_manifest("corpus.yaml", &text);
            if let (Err(err), Some(_)) = (&parsed, std::env::var_os("CORPUS_VERBOSE")) {
                println!("whole file {}: {err}", f.display());
            }
            parsed.is_ok()
        })
        .count();
    println!(
        "whole files accepted by apply: {whole} of {} ({}%)",
        files.len(),
        100 * whole / files.len().max(1)
    );
    assert!(
        whole >= WHOLE_FILES_AT_LEAST,
        "{whole} whole files accepted, fewer than the {WHOLE_FILES_AT_LEAST} before"
    );
    assert!(
        accepted >= ACCEPTED_AT_LEAST,
        "{accepted} pod specs accepted, fewer than the {ACCEPTED_AT_LEAST} before"
    );
}

/// The document's pod spec as a Pod (`kind` names what it came from), if it has one.
fn as_pod(document: &Value) -> Option<(String, Value)> {
    let kind = document["kind"].as_str()?.to_owned();
    let template = match kind.as_str() {
        "Pod" => document.clone(),
        // Each pod of a StatefulSet gets a volume for each of its volumeClaimTemplates.
        "StatefulSet" => {
            podkit::spec::workloads::stateful_template(document, 0)["spec"]["template"].clone()
        }
        k if TEMPLATED.contains(&k) => document["spec"]["template"].clone(),
        "CronJob" => document["spec"]["jobTemplate"]["spec"]["template"].clone(),
        _ => return None,
    };
    if !template["spec"].is_object() {
        return None;
    }
    let name = document["metadata"]["name"].as_str().unwrap_or("pod");
    let name: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    let name = match name.trim_matches('-') {
        "" => "pod".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    let mut metadata = json!({ "name": name });
    for key in ["labels", "annotations"] {
        if template["metadata"][key].is_object() {
            metadata[key] = template["metadata"][key].clone();
        }
    }
    Some((
        kind,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}),
    ))
}

/// The field a refusal names, indexes dropped and cut to what says what was refused:
/// `spec.containers[].resources.limits`, `spec.volumes[].configMap`, `spec.hostNetwork`.
fn field_of(line: &str) -> Option<String> {
    let line = line.trim().trim_start_matches("corpus.yaml: ");
    let (path, _) = line.split_once(": ")?;
    let path = path.split_whitespace().next()?;
    if !(path.starts_with("spec.") || path.starts_with("metadata.")) {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('.') {
        let plain = match part.split_once('[') {
            Some((name, _)) if !name.is_empty() => format!("{name}[]"),
            _ => part.to_owned(),
        };
        parts.push(plain);
    }
    let keep = match parts.get(1).map(String::as_str) {
        Some("containers[]" | "initContainers[]") => 4,
        Some("volumes[]") => 3,
        _ => 3,
    };
    parts.truncate(keep);
    Some(parts.join("."))
}
