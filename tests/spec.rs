//! Manifests in, plans or errors out: every refusal names the field path and what is wrong.

use std::time::Duration;

use podkit::spec::{
    self, EnvValue, Handler, HostPathType, ProxyProtocol, PullPolicy, RestartPolicy, Runs,
    VolumeSource,
};

const GOOD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
  annotations: {podkit.io/host-process: "true"}
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 5
  nodeSelector: {disk: ssd}
  tolerations: [{key: k, operator: Exists}]
  volumes:
  - name: content
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  - name: logs
    hostPath: {path: /var/log, type: Directory}
  initContainers:
  - name: pull-once
    image: podkit
    command: [podkit, puller, --one-time]
    volumeMounts: [{name: content, mountPath: /content}]
  - name: tail
    image: podkit
    restartPolicy: Always
    command: [podkit, tail]
    startupProbe: {exec: {command: ["true"]}}
  containers:
  - name: web
    image: nginx
    imagePullPolicy: Always
    command: [sh, -c]
    args: ["echo $(POD) $(GREETING)"]
    env:
    - {name: GREETING, value: hello}
    - name: POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
    livenessProbe: {tcpSocket: {port: 8080}}
    lifecycle: {preStop: {sleep: {seconds: 1}}}
    volumeMounts:
    - {name: content, mountPath: /usr/share/nginx/html, readOnly: true, subPath: current}
"#;

#[test]
fn a_full_manifest_becomes_a_plan() {
    let plans = spec::parse("good.yaml", GOOD).expect("valid");
    let [plan] = plans.as_slice() else {
        panic!("one pod")
    };
    assert_eq!(plan.name, "web");
    assert_eq!(plan.namespace, "default");
    assert_eq!(plan.hostname, "web");
    assert!(plan.share_process_namespace);
    assert_eq!(plan.restart_policy, RestartPolicy::Always);
    assert_eq!(plan.termination_grace_period, Duration::from_secs(5));
    assert!(
        plan.ignored.contains(&"spec.nodeSelector".to_owned()),
        "{:?}",
        plan.ignored
    );
    assert!(
        plan.ignored
            .contains(&"spec.containers[0].imagePullPolicy".to_owned())
    );

    assert_eq!(plan.init_containers.len(), 2);
    assert!(!plan.init_containers[0].sidecar && plan.init_containers[1].sidecar);
    let web = &plan.containers[0];
    assert_eq!(web.argv, ["sh", "-c", "echo $(POD) $(GREETING)"]);
    assert_eq!(web.env[1].value, EnvValue::FieldRef("metadata.name".into()));
    let readiness = web.readiness_probe.as_ref().expect("readiness");
    assert_eq!(readiness.period, Duration::from_secs(2));
    assert_eq!(readiness.failure_threshold, 3, "kubelet's default");
    assert!(
        matches!(&readiness.handler, Handler::HttpGet { port: 8080, path, .. } if path == "/healthz")
    );
    assert_eq!(web.mounts[0].sub_path.as_deref(), Some("current".as_ref()));
    assert!(web.mounts[0].read_only);
    assert_eq!(
        plan.volumes[0].source,
        VolumeSource::EmptyDir {
            memory: true,
            size_limit: Some(64 << 20)
        }
    );
    assert!(matches!(
        plan.volumes[1].source,
        VolumeSource::HostPath {
            kind: HostPathType::Directory,
            ..
        }
    ));
}

#[test]
fn several_documents_give_several_pods() {
    let text = format!(
        "{GOOD}\n---\n{}",
        GOOD.replace("name: web\n  labels", "name: api\n  labels")
    );
    let plans = spec::parse("two.yaml", &text).expect("valid");
    let names: Vec<_> = plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web", "api"]);
    let err =
        spec::parse("dup.yaml", &format!("{GOOD}\n---\n{GOOD}")).expect_err("same name twice");
    assert!(
        err.to_string().contains("pod \"web\" is defined twice"),
        "{err}"
    );
}

/// A minimal valid pod, with `spec_extra` added under `spec:` and `container_extra` under the
/// one container.
fn pod(spec_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {{podkit.io/host-process: 'true'}}\nspec:\n{spec_extra}  containers:\n  - name: app\n    command: [sleep, '1']\n{container_extra}"
    )
}

/// A pod is on the pod network unless it asks for its loopback only or is on the host's.
#[test]
fn pods_get_the_pod_network_unless_they_ask_for_none() {
    let network = |annotation: &str, spec: &str| {
        let text = pod(spec, "").replace(
            "podkit.io/host-process: 'true'",
            &format!("podkit.io/host-process: 'true'{annotation}"),
        );
        spec::parse("pod.yaml", &text).expect("valid")[0].pod_network
    };
    assert!(network("", ""));
    assert!(network(", podkit.io/network: pod", ""));
    assert!(!network(", podkit.io/network: none", ""));
    assert!(!network("", "  hostNetwork: true\n"));
}

#[test]
fn malformed_and_unsupported_manifests_are_refused_with_the_field_named() {
    let cases: Vec<(String, &str)> = vec![
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    command: [x\n".into(), "invalid YAML"),
        ("".into(), "no Pod in the file"),
        (pod("", "").replace("apiVersion: v1", "apiVersion: apps/v1"), "apiVersion: \"apps/v1\" is not supported"),
        (pod("", "").replace("kind: Pod", "kind: PersistentVolume"), "kind: \"PersistentVolume\" is not supported by podkit yet"),
        (pod("", "").replace("podkit.io/host-process: 'true'", "podkit.io/host-process: 'true', podkit.io/network: bridge"), "metadata.annotations[\"podkit.io/network\"]: \"bridge\": must be \"pod\" (an IP of its own) or \"none\" (loopback only)"),
        (pod("  hostNetwork: true\n", "").replace("podkit.io/host-process: 'true'", "podkit.io/host-process: 'true', podkit.io/network: none"), "metadata.annotations[\"podkit.io/network\"]: \"none\" contradicts hostNetwork: true"),
        (pod("", "").replace("podkit.io/host-process: 'true'", "podkit.io/host-process: 'true', podkit.io/host-ports: proxy"), "metadata.annotations[\"podkit.io/host-ports\"]: \"proxy\": must be \"nat\" (DNAT to the pod's IP, without the connect hook that the default adds for the host's own clients) or \"relay\" (into the pod's loopback); leave it out for the default"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.template.metadata.labels: `selector` does not match template `labels`"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {restartPolicy: Never, containers: [{name: c, image: nginx}]}\n".into(), "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx, comand: [x]}]}\n".into(), "spec.template.spec.containers[0].comand: unknown field"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.strategy.rollingUpdate.maxUnavailable: may not be 0 when `maxSurge` is 0"),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec: {containers: [{name: c, image: busybox}]}\n".into(), "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec: {containers: [{name: c, image: busybox}]}\n".replace("spec:\n  template", "spec:\n  completionMode: Indexed\n  parallelism: 2\n  template").replace("containers", "restartPolicy: Never, containers"), "spec.completions: Required value: when completion mode is Indexed"),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec: {containers: [{name: c, image: busybox}]}\n".replace("spec:\n  template", "spec:\n  podFailurePolicy: {rules: []}\n  template").replace("containers", "restartPolicy: Never, containers"), "spec.podFailurePolicy: pod failure policies are not supported by podkit yet"),
        ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec: {containers: [{name: c, image: busybox}]}\n".replace("spec:\n  template", "spec:\n  selector: {matchLabels: {a: b}}\n  template").replace("containers", "restartPolicy: Never, containers"), "spec.selector: `selector` will be auto-generated"),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '61 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: OnFailure, containers: [{name: c, image: busybox}]}\n".into(), "spec.schedule: Invalid value: \"61 * * * *\""),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '@hourly'\n  timeZone: Mars/Olympus\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: OnFailure, containers: [{name: c, image: busybox}]}\n".into(), "spec.timeZone: "),
        ("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '@hourly'\n  jobTemplate:\n    spec:\n      template:\n        spec: {containers: [{name: c, image: busybox}]}\n".into(), "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        ("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx, volumeMounts: [{name: data, mountPath: /d}]}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce]}\n".into(), "spec.volumeClaimTemplates[0].spec.resources.requests.storage: required"),
        ("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n  selector: {matchLabels: {app: a}}\n  updateStrategy: {rollingUpdate: {maxUnavailable: 2}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.updateStrategy.rollingUpdate.maxUnavailable: 2: not supported by podkit"),
        ("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: a}}\n  updateStrategy: {type: Surge}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.updateStrategy.type: Unsupported value: \"Surge\""),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchExpressions: [{key: app, operator: In, values: [b, c]}]}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.template.metadata.labels: `selector` does not match template `labels`"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchExpressions: [{key: app, operator: in, values: [a]}]}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.selector.matchExpressions[0].operator: Unsupported value: \"in\""),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchExpressions: [{key: app, operator: Exists, values: [a]}]}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.selector.matchExpressions[0].values: Forbidden"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80, nodePort: 30080}]\n".into(), "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: NodePort\n  ports: [{port: 80}, {port: 443}]\n".into(), "spec.ports[0].name: Required value: each port must be named when there are several"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: Ingress\n  ports: [{port: 80}]\n".into(), "spec.type: Unsupported value: \"Ingress\""),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  sessionAffinity: Sticky\n  ports: [{port: 80}]\n".into(), "spec.sessionAffinity: Unsupported value: \"Sticky\""),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]\n".into(), "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10}}\n  ports: [{port: 80}]\n".into(), "spec.sessionAffinityConfig: must not be set when `sessionAffinity` is None"),
        ("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: r}\nspec:\n  selector: {app: b}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: nginx}]}\n".into(), "spec.template.metadata.labels: `selector` does not match template `labels`"),
        (pod("", "").replace("name: p\n", "generateName: p-\n"), "metadata.name: required (generateName is not supported"),
        (pod("", "").replace("name: p\n", "name: Web_1\n"), "metadata.name: \"Web_1\" must consist of lower case"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: []\n".into(), "spec.containers: at least one container is required"),
        (pod("", "  - name: app\n    command: [x]\n"), "spec.containers[1].name: duplicate name \"app\""),
        (pod("", "").replace("command: [sleep, '1']", "image: nginx"), "spec.containers[0].command: required for a host-process container (podkit.io/host-process): it runs no image"),
        (pod("", "    comand: [x]\n"), "spec.containers[0].comand: unknown field (a typo?)"),
        (pod("", "    resources: {limits: {cpu: '1'}}\n"), "spec.containers[0].resources: not supported for host-process container \"app\": podkit applies cpu and memory through the OCI runtime, to image containers only"),
        (pod("  hostNetwork: true\n", "    ports: [{containerPort: 80, hostPort: 8080}]\n"), "spec.containers[0].ports[0].hostPort: must match containerPort when hostNetwork is true"),
        (pod("  hostNetwork: true\n  securityContext: {sysctls: [{name: net.core.somaxconn, value: '1'}]}\n", ""), "spec.securityContext.sysctls: \"net.core.somaxconn\" is not allowed with hostNetwork: it would change the host's"),
        (pod("  hostIPC: true\n  securityContext: {sysctls: [{name: kernel.shm_rmid_forced, value: '1'}]}\n", ""), "spec.securityContext.sysctls: \"kernel.shm_rmid_forced\" is not allowed with hostIPC"),
        (pod("  hostPID: true\n  shareProcessNamespace: true\n", ""), "spec.shareProcessNamespace: may not be true together with hostPID"),
        (pod("  securityContext: {supplementalGroupsPolicy: Loose}\n", ""), "spec.securityContext.supplementalGroupsPolicy: \"Loose\": must be Merge or Strict"),
        (pod("  restartPolicy: Sometimes\n", ""), "spec.restartPolicy: \"Sometimes\": must be Always, OnFailure or Never"),
        (pod("  schedulingGates: [{name: a}, {name: a}]\n", ""), "spec.schedulingGates[1].name: Duplicate value: \"a\""),
        (pod("  schedulingGates: [{name: 'not ok'}]\n", ""), "spec.schedulingGates[0].name: \"not ok\": name part must consist of alphanumeric characters"),
        (pod("  schedulingGates: [{name: Example.com/gate}]\n", ""), "spec.schedulingGates[0].name: \"Example.com/gate\": prefix part must be a DNS subdomain"),
        (pod("  nodeName: vm\n  schedulingGates: [{name: a}]\n", ""), "spec.nodeName: Forbidden: cannot be set until all schedulingGates have been removed"),
        (pod("", "    volumeMounts: [{name: nope, mountPath: /x}]\n"), "spec.containers[0].volumeMounts[0].name: no volume named \"nope\" in spec.volumes"),
        (pod("  volumes: [{name: v, emptyDir: {}}]\n", "    volumeMounts: [{name: v, mountPath: relative}]\n"), "spec.containers[0].volumeMounts[0].mountPath: \"relative\" must be an absolute path"),
        (pod("  volumes: [{name: v, emptyDir: {}}]\n", "    volumeMounts: [{name: v, mountPath: /x, subPath: ../../etc}]\n"), "spec.containers[0].volumeMounts[0].subPath: \"../../etc\" must be a relative path without '..'"),
        (pod("  volumes: [{name: v, nfs: {server: s, path: /}}]\n", ""), "spec.volumes[0].nfs: not supported by podkit (supported volume sources: emptyDir, hostPath, configMap, secret, projected, downwardAPI, persistentVolumeClaim)"),
        (pod("  volumes: [{name: v, configMap: {name: c, items: [{key: '../k', path: k}]}}]\n", ""), "spec.volumes[0].configMap.items[0].key: \"../k\": a valid config key must consist of alphanumeric characters"),
        (pod("  volumes: [{name: v, secret: {items: [{key: k, path: k}]}}]\n", ""), "spec.volumes[0].secret.secretName: required"),
        (pod("  volumes: [{name: v, configMap: {name: c, items: [{key: a, path: x}, {key: b, path: x}]}}]\n", ""), "spec.volumes[0].configMap.items[1].path: \"x\": conflicting duplicate paths"),
        (pod("  volumes: [{name: v, projected: {sources: [{serviceAccountToken: {path: t}}]}}]\n", ""), "spec.volumes[0].projected.sources[0].serviceAccountToken: not supported by podkit: a projected volume holds configMap, secret and downwardAPI sources"),
        (pod("", "    envFrom: [{prefix: X_}]\n"), "spec.containers[0].envFrom[0]: must specify one of: `configMapRef` or `secretRef`"),
        (pod("", "    env: [{name: X, valueFrom: {configMapKeyRef: {name: c, key: 'a b'}}}]\n"), "spec.containers[0].env[0].valueFrom.configMapKeyRef.key: \"a b\": a valid config key"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: x}\nbinaryData: {a: eA==}\n".into(), "data[\"a\"]: duplicate of key present in binaryData"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'a/b': x}\n".into(), "data[\"a/b\"]: \"a/b\": a valid config key must consist of alphanumeric characters"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n".into(), "data[\"tls.key\"]: required for a Secret of type \"kubernetes.io/tls\""),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: x}\n".into(), "data[\"a\"]: not base64"),
        ("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n".into(), "kind: \"Widget\" is not a kind podkit knows"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteOnce]}\n".into(), "spec.resources.requests.storage: required"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteSome], resources: {requests: {storage: 1Gi}}}\n".into(), "spec.accessModes: \"ReadWriteSome\": must be one of ReadWriteOnce"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteOnce], volumeMode: Block, resources: {requests: {storage: 1Gi}}}\n".into(), "spec.volumeMode: \"Block\" is not supported by podkit: its claims are directories"),
        ("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: c}\nspec: {accessModes: [ReadWriteOnce], dataSource: {kind: VolumeSnapshot, name: s}, resources: {requests: {storage: 1Gi}}}\n".into(), "spec.dataSource: not supported by podkit"),
        (pod("  volumes: [{name: v, persistentVolumeClaim: {claimName: ''}}]\n", ""), "spec.volumes[0].persistentVolumeClaim.claimName: required"),
        (pod("  volumes: [{name: v, emptyDir: {sizeLimit: lots}}]\n", ""), "spec.volumes[0].emptyDir.sizeLimit"),
        (pod("  volumes: [{name: v, emptyDir: {}}, {name: v, emptyDir: {}}]\n", ""), "spec.volumes[1].name: duplicate name \"v\""),
        (pod("", "    env: [{name: X, valueFrom: {}}]\n"), "spec.containers[0].env[0].valueFrom: not supported by podkit: only fieldRef"),
        (pod("", "    env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.restartPolicy}}}]\n"), "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: \"spec.restartPolicy\" is not supported"),
        (pod("", "    livenessProbe: {httpGet: {port: web}}\n"), "spec.containers[0].livenessProbe.httpGet.port: no container port named \"web\""),
        (pod("", "    livenessProbe: {periodSeconds: 5}\n"), "spec.containers[0].livenessProbe: needs one handler"),
        (pod("", "    livenessProbe: {grpc: {port: 0}}\n"), "spec.containers[0].livenessProbe.grpc.port: 0: must be between 1 and 65535"),
        (pod("", "    livenessProbe: {grpc: {port: 1}, tcpSocket: {port: 1}}\n"), "spec.containers[0].livenessProbe: exactly one handler allowed (exec, httpGet, tcpSocket or grpc)"),
        (pod("", "    livenessProbe: {exec: {command: [x]}, successThreshold: 2}\n"), "spec.containers[0].livenessProbe.successThreshold: must be 1"),
        (pod("", "    readinessProbe: {exec: {command: [x]}, terminationGracePeriodSeconds: 5}\n"), "spec.containers[0].readinessProbe.terminationGracePeriodSeconds: must not be set for readinessProbes"),
        (pod("", "    livenessProbe: {exec: {command: [x]}, terminationGracePeriodSeconds: 0}\n"), "spec.containers[0].livenessProbe.terminationGracePeriodSeconds: 0: must be greater than 0"),
        (pod("", "    restartPolicy: Always\n"), "spec.containers[0].restartPolicy: only init containers may set it"),
        (pod("", "    ports: [{containerPort: 80, hostPort: 8080, protocol: SCTP}]\n"), "spec.containers[0].ports[0].protocol: \"SCTP\": podkit supports TCP and UDP"),
        (pod("", "    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080}]\n"), "spec.containers[0].ports: hostPort 8080 (TCP) is published twice in the pod"),
        (pod("", "    ports: [{containerPort: 80, hostPort: 8080, hostIP: here}]\n"), "spec.containers[0].ports[0].hostIP: \"here\" is not an IP address"),
        (pod("", "    securityContext: {runAsNonRoot: true}\n"), "spec.containers[0].securityContext.runAsNonRoot: true, but the container would run as root"),
        (pod("", "    securityContext: {privileged: true}\n"), "spec.containers[0].securityContext.privileged: not supported by podkit"),
        (pod("  terminationGracePeriodSeconds: -1\n", ""), "spec.terminationGracePeriodSeconds: -1: must be >= 0"),
        (pod("", "    ports: [{containerPort: many}]\n"), "spec.containers[0].ports[0].containerPort"),
        (pod("", "    lifecycle: {preStop: {tcpSocket: {port: 80}}}\n"), "spec.containers[0].lifecycle.preStop.tcpSocket: not supported"),
        (pod("", "    workingDir: tmp\n"), "spec.containers[0].workingDir: \"tmp\" must be an absolute path"),
        (pod("  securityContext: {seccompProfile: {type: RuntimeDefault}}\n", ""), "spec.securityContext.seccompProfile: not supported for host-process container \"app\": a host process runs without a seccomp filter"),
        (pod("", "    securityContext: {seccompProfile: {type: RuntimeDefault}}\n"), "spec.containers[0].securityContext.seccompProfile: not supported by podkit"),
        (pod("", "").replace("command: [sleep, '1']", "image: busybox:1\n    securityContext: {seccompProfile: {type: Localhost}}").replace("podkit.io/host-process: 'true'", "x: z"), "spec.containers[0].securityContext.seccompProfile.localhostProfile: required when type is Localhost"),
        (pod("", "").replace("command: [sleep, '1']", "image: busybox:1\n    securityContext: {seccompProfile: {type: Localhost, localhostProfile: ../x.json}}").replace("podkit.io/host-process: 'true'", "x: z"), "spec.containers[0].securityContext.seccompProfile.localhostProfile: \"../x.json\" must be a relative path without '..'"),
        (pod("", "").replace("command: [sleep, '1']", "image: busybox:1\n    securityContext: {seccompProfile: {type: RuntimeDefault, localhostProfile: x.json}}").replace("podkit.io/host-process: 'true'", "x: z"), "spec.containers[0].securityContext.seccompProfile.localhostProfile: may only be set when type is Localhost"),
        (pod("", "").replace("command: [sleep, '1']", "image: busybox:1\n    securityContext: {seccompProfile: {type: Strict}}").replace("podkit.io/host-process: 'true'", "x: z"), "spec.containers[0].securityContext.seccompProfile.type: \"Strict\": must be RuntimeDefault, Unconfined or Localhost"),
        (pod("  securityContext: {sysctls: [{name: kernel.panic, value: '1'}]}\n", ""), "spec.securityContext.sysctls[0].name: \"kernel.panic\" is not namespaced: setting it would change the host"),
        (pod("  securityContext: {sysctls: [{name: Net.Core, value: '1'}]}\n", ""), "spec.securityContext.sysctls[0].name: \"Net.Core\" is not a sysctl name"),
        (pod("  securityContext: {sysctls: [{name: net.core.somaxconn, value: '1'}, {name: net/core/somaxconn, value: '2'}]}\n", ""), "spec.securityContext.sysctls[1].name: \"net.core.somaxconn\" is set twice"),
        (pod("  securityContext: {fsGroup: 2000}\n", ""), "spec.securityContext.fsGroup: not supported for host-process container \"app\""),
        (pod("  securityContext: {fsGroupChangePolicy: Never}\n", ""), "spec.securityContext.fsGroupChangePolicy: \"Never\": must be Always or OnRootMismatch"),
        (pod("", "").replace("command: [sleep, '1']", "image: busybox:1\n    securityContext: {procMount: Unmasked}").replace("podkit.io/host-process: 'true'", "x: z"), "spec.containers[0].securityContext.procMount: Unmasked needs the pod in a user namespace of its own (hostUsers: false)"),
        (pod("", "    terminationMessagePath: /tmp/msg\n"), "spec.containers[0].terminationMessagePath: \"/tmp/msg\": a host process sees the host's filesystem"),
        (pod("", "    terminationMessagePolicy: Always\n"), "spec.containers[0].terminationMessagePolicy: \"Always\": must be File or FallbackToLogsOnError"),
    ];
    assert!(cases.len() >= 20);
    for (yaml, want) in &cases {
        let err = spec::parse("pod.yaml", yaml).expect_err(want);
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "want {want:?} in:\n{msg}\nfor manifest:\n{yaml}"
        );
        assert!(msg.starts_with("pod.yaml: "), "names the file: {msg}");
    }
}

/// What the API server reads as unset is accepted: fields podkit does not honour set to their
/// defaults (`hostNetwork: false`, `hostUsers: true`, ...) and empty ones
/// (`resources: {}`); a volume with no source is an emptyDir, as the API server defaults it; a
/// refused volume is one error, not one more per mount of it.
#[test]
fn defaults_and_empty_fields_are_accepted_and_a_refused_volume_is_one_error() {
    let spec_extra = "  hostNetwork: false\n  hostPID: false\n  hostIPC: false\n  hostUsers: true\n  enableServiceLinks: true\n  readinessGates: []\n  volumes: [{name: scratch}]\n";
    let container_extra = "    tty: false\n    stdin: false\n    stdinOnce: false\n    resources: {}\n    envFrom: []\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n";
    let plan = &spec::parse("pod.yaml", &pod(spec_extra, container_extra)).expect("valid")[0];
    assert!(
        matches!(
            plan.volumes[0].source,
            VolumeSource::EmptyDir {
                memory: false,
                size_limit: None
            }
        ),
        "{:?}",
        plan.volumes[0]
    );
    let plan = &spec::parse(
        "pod.yaml",
        &pod("", "    resources: {limits: {}, requests: {}}\n"),
    )
    .expect("valid")[0];
    assert_eq!(plan.containers.len(), 1);

    let refused = pod(
        "  volumes: [{name: config, nfs: {server: s, path: /}}]\n",
        "    volumeMounts: [{name: config, mountPath: /a}, {name: config, mountPath: /b}]\n",
    );
    let err = spec::parse("pod.yaml", &refused)
        .expect_err("nfs")
        .to_string();
    assert!(err.contains("spec.volumes[0].nfs: not supported"), "{err}");
    assert!(
        !err.contains("volumeMounts"),
        "one error for the volume: {err}"
    );
}

/// AppArmor is never dropped: Unconfined (what podkit's containers run as) is accepted; any
/// other profile, from the field or the older annotation, is refused naming the field, with the
/// reason (this host has no AppArmor, or podkit applies none).
#[test]
fn app_armor_profiles_are_refused_unless_unconfined() {
    for (spec_extra, container_extra, annotation) in [
        (
            "  securityContext: {appArmorProfile: {type: Unconfined}}\n",
            "",
            "",
        ),
        (
            "",
            "    securityContext: {appArmorProfile: {type: Unconfined}}\n",
            "",
        ),
        (
            "",
            "",
            ", container.apparmor.security.beta.kubernetes.io/app: unconfined",
        ),
    ] {
        let yaml = pod(spec_extra, container_extra).replace(
            "podkit.io/host-process: 'true'",
            &format!("podkit.io/host-process: 'true'{annotation}"),
        );
        spec::parse("pod.yaml", &yaml).expect(&yaml);
    }
    for (spec_extra, container_extra, annotation, field) in [
        (
            "  securityContext: {appArmorProfile: {type: RuntimeDefault}}\n",
            "",
            "",
            "spec.securityContext.appArmorProfile.type: \"RuntimeDefault\"",
        ),
        (
            "",
            "    securityContext: {appArmorProfile: {type: Localhost, localhostProfile: p}}\n",
            "",
            "spec.containers[0].securityContext.appArmorProfile.type: \"Localhost\"",
        ),
        (
            "",
            "",
            ", container.apparmor.security.beta.kubernetes.io/app: runtime/default",
            "metadata.annotations[\"container.apparmor.security.beta.kubernetes.io/app\"]: \"runtime/default\"",
        ),
        (
            "",
            "",
            ", container.apparmor.security.beta.kubernetes.io/nope: unconfined",
            "\"nope\" is no container of the pod",
        ),
    ] {
        let yaml = pod(spec_extra, container_extra).replace(
            "podkit.io/host-process: 'true'",
            &format!("podkit.io/host-process: 'true'{annotation}"),
        );
        let err = spec::parse("pod.yaml", &yaml).expect_err(field).to_string();
        assert!(err.contains(field), "want {field:?} in {err}");
        assert!(
            field.contains("no container")
                || err.contains("AppArmor") && err.contains("only Unconfined is accepted"),
            "{err}"
        );
    }
}

/// Manifests shaped to attack the host (issue #16): each refused before anything starts, with
/// the field named.
#[test]
fn manifests_that_would_reach_past_the_pod_are_refused() {
    let vol = "  volumes: [{name: v, emptyDir: {}}]\n";
    let cases = [
        // A tmpfs of size 0 has no limit at all.
        (
            pod(
                "  volumes: [{name: v, emptyDir: {medium: Memory, sizeLimit: '0'}}]\n",
                "",
            ),
            "spec.volumes[0].emptyDir.sizeLimit: 0 is not a size for a Memory emptyDir",
        ),
        // Mounting over `/` does nothing for a running process: it would write to the host's.
        (
            pod(vol, "    volumeMounts: [{name: v, mountPath: /}]\n"),
            "spec.containers[0].volumeMounts[0].mountPath: \"/\" is the root",
        ),
        (
            pod(vol, "    volumeMounts: [{name: v, mountPath: //}]\n"),
            "mountPath: \"//\" is the root",
        ),
        (
            pod(vol, "    volumeMounts: [{name: v, mountPath: /etc}]\n"),
            "mountPath: \"/etc\" would hide the host's own directory",
        ),
        (
            pod(vol, "    volumeMounts: [{name: v, mountPath: /usr/}]\n"),
            "mountPath: \"/usr/\" would hide the host's own directory",
        ),
        (
            pod(vol, "    volumeMounts: [{name: v, mountPath: /proc}]\n"),
            "would hide the host's own directory",
        ),
        // A NUL byte would cut the argument, the variable or the path short.
        (
            pod("", "    args: [\"a\\0b\"]\n"),
            "spec.containers[0].args[0]: contains a NUL byte",
        ),
        (
            pod("", "    env: [{name: X, value: \"1\\0; rm -rf /\"}]\n"),
            "spec.containers[0].env[0].value: contains a NUL byte",
        ),
        (
            pod("", "    workingDir: \"/tmp\\0/x\"\n"),
            "spec.containers[0].workingDir: contains a NUL byte",
        ),
        (
            pod("", "").replace("command: [sleep, '1']", "command: [\"sleep\\0\", '1']"),
            "spec.containers[0].command[0]: contains a NUL byte",
        ),
    ];
    for (yaml, want) in &cases {
        let err = spec::parse("pod.yaml", yaml).expect_err(want);
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "want {want:?} in:\n{msg}\nfor manifest:\n{yaml}"
        );
    }
    // Below the host's directories, and a Memory emptyDir with a size, are fine.
    for ok in [
        pod(
            vol,
            "    volumeMounts: [{name: v, mountPath: /etc/app}, {name: v, mountPath: /tmp/x}]\n",
        ),
        pod(
            "  volumes: [{name: v, emptyDir: {medium: Memory, sizeLimit: 1Mi}}]\n",
            "",
        ),
    ] {
        spec::parse("pod.yaml", &ok).expect("valid");
    }
}

/// A hostPort open to other hosts is relayed, so its app sees every client as 127.0.0.1: said
/// as a warning, unless the app gets the client's address in a PROXY protocol header (the
/// `podkit.io/proxy-protocol` annotation) or the port listens on loopback only.
#[test]
fn host_ports_open_to_other_hosts_warn_unless_the_app_gets_the_clients_address() {
    let ports = "    ports:\n    - {containerPort: 80, hostPort: 8080}\n    - {containerPort: 81, hostPort: 8081, hostIP: 127.0.0.1}\n    - {containerPort: 82, hostPort: 8082, hostIP: 0.0.0.0}\n    - {containerPort: 53, hostPort: 8053, protocol: UDP}\n";
    // A pod with an IP: its hostPorts are NAT, the app sees each client's address, nothing to
    // warn of.
    let nat = &spec::parse("pod.yaml", &pod("", ports)).expect("valid")[0];
    assert!(nat.warnings.is_empty(), "{:?}", nat.warnings);
    assert!(nat.containers[0].host_ports.iter().all(|p| !p.relay));
    // Relayed (asked for, or a pod with only its loopback): warned of.
    let plain = pod("", ports).replace(
        "podkit.io/host-process: 'true'",
        "podkit.io/host-process: 'true', podkit.io/host-ports: relay",
    );
    let plan = &spec::parse("pod.yaml", &plain).expect("valid")[0];
    assert!(plan.containers[0].host_ports.iter().all(|p| p.relay));
    let loopback = pod("", ports).replace(
        "podkit.io/host-process: 'true'",
        "podkit.io/host-process: 'true', podkit.io/network: none",
    );
    let only_lo = &spec::parse("pod.yaml", &loopback).expect("valid")[0];
    assert_eq!(only_lo.warnings, plan.warnings);
    let warned: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| w.contains("127.0.0.1"))
        .collect();
    assert_eq!(
        warned.len(),
        2,
        "8080 and 8082, not loopback-only 8081 or UDP: {:?}",
        plan.warnings
    );
    assert!(
        warned[0].contains("hostPort 8080") && warned[0].contains("spec.containers[0]"),
        "{}",
        warned[0]
    );

    let with = |value: &str| {
        plain.replace(
            "podkit.io/host-ports: relay",
            &format!("podkit.io/host-ports: relay, podkit.io/proxy-protocol: '{value}'"),
        )
    };
    let plan = &spec::parse("pod.yaml", &with("v2")).expect("valid")[0];
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let versions: Vec<_> = plan.containers[0]
        .host_ports
        .iter()
        .map(|p| (p.host_port, p.proxy_protocol))
        .collect();
    assert_eq!(
        versions,
        [
            (8080, Some(ProxyProtocol::V2)),
            (8081, Some(ProxyProtocol::V2)),
            (8082, Some(ProxyProtocol::V2)),
            (8053, None)
        ]
    );
    let plan = &spec::parse("pod.yaml", &with("8080=v1")).expect("valid")[0];
    assert_eq!(
        plan.containers[0].host_ports[0].proxy_protocol,
        Some(ProxyProtocol::V1)
    );
    assert_eq!(
        plan.warnings.len(),
        1,
        "8082 still warns: {:?}",
        plan.warnings
    );

    for (value, want) in [
        ("v3", "\"v3\": must be v1 or v2"),
        ("9999=v1", "9999: no TCP hostPort 9999 in the pod"),
        ("8053=v2", "8053: no TCP hostPort"),
    ] {
        let err = spec::parse("pod.yaml", &with(value))
            .expect_err(value)
            .to_string();
        assert!(
            err.contains("metadata.annotations[\"podkit.io/proxy-protocol\"]")
                && err.contains(want),
            "{err}"
        );
    }
}

/// `resources` as the API server reads them (kubelet's numbers are in the supervisor's unit
/// tests): requests defaulted from limits, the QoS class, and every refusal with its reason.
#[test]
fn resources_are_read_like_the_api_server_and_give_the_qos_class() {
    let image_pod = |containers: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}"
        )
    };
    let plan = |yaml: &str| {
        let mut plans = spec::parse("pod.yaml", yaml).expect("valid");
        plans.remove(0)
    };
    let burstable = plan(&image_pod(
        "  - name: a\n    image: busybox:1\n    resources:\n      requests: {cpu: 250m, memory: 64Mi, ephemeral-storage: 1Gi}\n      limits: {cpu: '0.5', memory: 1.5Gi}\n  - name: b\n    image: busybox:1\n",
    ));
    assert_eq!(burstable.qos, spec::Qos::Burstable);
    assert_eq!(
        burstable.containers[0].resources,
        spec::Resources {
            cpu_request: Some(250),
            cpu_limit: Some(500),
            memory_request: Some(64 << 20),
            memory_limit: Some(3 << 29),
        }
    );
    assert_eq!(
        burstable.containers[1].resources,
        spec::Resources::default()
    );
    assert!(
        burstable
            .ignored
            .contains(&"spec.containers[0].resources.requests.ephemeral-storage".to_owned()),
        "{:?}",
        burstable.ignored
    );

    // Limits alone: the requests are the limits, and the pod Guaranteed (init containers count).
    let guaranteed = plan(&image_pod(
        "  - name: a\n    image: busybox:1\n    resources: {limits: {cpu: 100m, memory: 1e8}}\n",
    ));
    assert_eq!(guaranteed.qos, spec::Qos::Guaranteed);
    assert_eq!(guaranteed.containers[0].resources.cpu_request, Some(100));
    assert_eq!(
        guaranteed.containers[0].resources.memory_request,
        Some(100_000_000)
    );
    let with_init = image_pod(
        "  - name: a\n    image: busybox:1\n    resources: {limits: {cpu: 100m, memory: 64Mi}}\n",
    )
    .replace(
        "  containers:\n",
        "  initContainers:\n  - name: i\n    image: busybox:1\n  containers:\n",
    );
    assert_eq!(plan(&with_init).qos, spec::Qos::Burstable);
    assert_eq!(
        plan(&image_pod("  - name: a\n    image: busybox:1\n")).qos,
        spec::Qos::BestEffort
    );

    let refused = [
        (
            "requests: {cpu: '2'}\n      limits: {cpu: '1'}",
            "spec.containers[0].resources.requests.cpu: \"2\" must be less than or equal to the cpu limit of \"1\"",
        ),
        (
            "limits: {memory: 12Q}",
            "spec.containers[0].resources.limits.memory: \"12Q\": quantities must match the regular expression",
        ),
        (
            "limits: {memory: '-1'}",
            "spec.containers[0].resources.limits.memory: \"-1\" must be greater than or equal to 0",
        ),
        (
            "limits: {memory: 16Ei}",
            "spec.containers[0].resources.limits.memory: \"16Ei\" is too large",
        ),
        // Huge pages, as the API server checks them.
        (
            "limits: {hugepages-2Mi: 3Mi, memory: 64Mi}",
            "spec.containers[0].resources.limits.hugepages-2Mi: \"3Mi\": 3Mi is not positive integer multiple of hugepages-2Mi",
        ),
        (
            "limits: {hugepages-2Mi: 2Mi}",
            "spec.containers[0].resources: Forbidden: HugePages require cpu or memory",
        ),
        (
            "requests: {hugepages-2Mi: 2Mi, memory: 64Mi}",
            "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
        ),
        (
            "requests: {hugepages-2Mi: 2Mi, memory: 64Mi}\n      limits: {hugepages-2Mi: 4Mi}",
            "spec.containers[0].resources.requests.hugepages-2Mi: \"2Mi\" must be equal to hugepages-2Mi limit of \"4Mi\"",
        ),
        (
            "limits: {hugepages-2Mi: '-2Mi', memory: 64Mi}",
            "spec.containers[0].resources.limits.hugepages-2Mi: \"-2Mi\" must be greater than or equal to 0",
        ),
        (
            "limits: {hugepages-x: 2Mi, cpu: 1}",
            "spec.containers[0].resources.limits.hugepages-x: \"2Mi\": 2Mi is not positive integer multiple of hugepages-x",
        ),
        // Extended resources, as the API server checks them (served from the host's CDI
        // specs, see tests/images.rs).
        (
            "limits: {example.com/device: 1.5}",
            "spec.containers[0].resources.limits.example.com/device: \"1.5\" must be an integer",
        ),
        (
            "limits: {example.com/device: 500m}",
            "spec.containers[0].resources.limits.example.com/device: \"500m\" must be an integer",
        ),
        (
            "requests: {example.com/device: 1}",
            "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
        ),
        (
            "requests: {example.com/device: 1}\n      limits: {example.com/device: 2}",
            "spec.containers[0].resources.requests.example.com/device: \"1\" must be equal to example.com/device limit of \"2\"",
        ),
        (
            "limits: {example.com/device: '-1'}",
            "spec.containers[0].resources.limits.example.com/device: \"-1\" must be greater than or equal to 0",
        ),
        (
            "limits: {Example_.com/device: 1}",
            "spec.containers[0].resources.limits.Example_.com/device: \"Example_.com/device\": prefix part must be a DNS subdomain",
        ),
        (
            "limits: {kubernetes.io/device: 1}",
            "spec.containers[0].resources.limits.kubernetes.io/device: must be a standard resource for containers",
        ),
        (
            "limits: {gpu: 1}",
            "spec.containers[0].resources.limits.gpu: must be a standard resource for containers",
        ),
        (
            "limits: {ephemeral-storage: 1Gi}",
            "spec.containers[0].resources.limits.ephemeral-storage: not supported by podkit: kubelet enforces it by evicting the pod",
        ),
        (
            "claims: [{name: gpu}]",
            "spec.containers[0].resources.claims: not supported by podkit: resource claims",
        ),
    ];
    for (resources, want) in refused {
        let yaml = image_pod(&format!(
            "  - name: a\n    image: busybox:1\n    resources:\n      {resources}\n"
        ));
        let err = spec::parse("pod.yaml", &yaml).expect_err(want).to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }

    // An extended resource: its devices on the container; a request equal to its limit is
    // accepted, and zero asks for none.
    let devices = plan(&image_pod(
        "  - name: a\n    image: busybox:1\n    resources: {requests: {example.com/device: 2}, limits: {example.com/device: '2', vendor.io/gpu: 0, cpu: 100m}}\n",
    ));
    assert_eq!(
        devices.containers[0].devices,
        [
            ("example.com/device".to_owned(), 2),
            ("vendor.io/gpu".to_owned(), 0)
        ]
    );
    assert_eq!(devices.containers[0].resources.cpu_limit, Some(100));
    // Not for a host process, which sees the host's /dev.
    let host = pod("", "    resources: {limits: {example.com/device: 1}}\n");
    let err = spec::parse("pod.yaml", &host)
        .expect_err("host")
        .to_string();
    assert!(
        err.contains("spec.containers[0].resources.limits: extended resources are not supported for host-process container \"app\""),
        "{err}"
    );
}

/// `hugepages-<size>` and `medium: HugePages[-<size>]` emptyDirs: accepted as the API server
/// accepts them (a limit alone is the request; host processes may give cpu or memory as
/// requests, listed as ignored), the pod's pages summed as kube-scheduler sums them, the
/// volume's page size found as kubelet finds it, and kubelet's mount errors given up front.
#[test]
fn huge_pages_are_checked_as_the_api_server_and_kubelet_check_them() {
    let image = |containers: &str, volumes: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{volumes}  containers:\n{containers}"
        )
    };
    let plan = |yaml: &str| spec::parse("pod.yaml", yaml).expect("valid").remove(0);
    let two = 2u64 << 20;
    let accepted = plan(&image(
        "  - {name: a, image: busybox:1, resources: {limits: {hugepages-2Mi: 4Mi, memory: 64Mi}}}\n  - {name: b, image: busybox:1, resources: {requests: {hugepages-2Mi: 2Mi, cpu: 1}, limits: {hugepages-2Mi: 2Mi}}}\n",
        "  volumes:\n  - {name: h, emptyDir: {medium: HugePages}}\n  - {name: s, emptyDir: {medium: HugePages-2Mi}}\n",
    ));
    assert_eq!(accepted.containers[0].hugepages, [(two, 4 << 20)].into());
    assert_eq!(accepted.containers[1].hugepages, [(two, two)].into());
    assert_eq!(accepted.huge_pages(), [(two, 6 << 20)].into());
    for v in &accepted.volumes {
        assert_eq!(v.source, VolumeSource::HugePages { page_size: two });
    }
    // A host process: cpu or memory as requests only, listed as ignored.
    let host = plan(&pod(
        "",
        "    resources: {limits: {hugepages-2Mi: 2Mi}, requests: {memory: 16Mi}}\n",
    ));
    assert_eq!(host.containers[0].hugepages, [(two, two)].into());
    assert!(
        host.ignored
            .iter()
            .any(|i| i.starts_with("spec.containers[0].resources.requests.memory")),
        "{:?}",
        host.ignored
    );
    let err = spec::parse(
        "pod.yaml",
        &pod(
            "",
            "    resources: {limits: {hugepages-2Mi: 2Mi, memory: 16Mi}}\n",
        ),
    )
    .expect_err("a memory limit on a host process")
    .to_string();
    assert!(
        err.contains("spec.containers[0].resources: not supported for host-process container"),
        "{err}"
    );

    let refused = [
        (
            "  - {name: a, image: busybox:1, resources: {limits: {memory: 64Mi}}}\n",
            "  volumes:\n  - {name: h, emptyDir: {medium: HugePages}}\n",
            "spec.volumes[0].emptyDir.medium: medium HugePages: hugePages storage requested, but there is no resource request for huge pages",
        ),
        (
            "  - {name: a, image: busybox:1, resources: {limits: {hugepages-2Mi: 2Mi, hugepages-1Gi: 1Gi, memory: 64Mi}}}\n",
            "  volumes:\n  - {name: h, emptyDir: {medium: HugePages}}\n",
            "spec.volumes[0].emptyDir.medium: medium: HugePages can't be used if container requests multiple huge page sizes",
        ),
        (
            "  - {name: a, image: busybox:1, resources: {limits: {hugepages-2Mi: 2Mi, memory: 64Mi}}}\n",
            "  volumes:\n  - {name: h, emptyDir: {medium: HugePages-1Gi}}\n",
            "spec.volumes[0].emptyDir.medium: medium HugePages-1Gi: hugePages storage requested, but there is no resource request for huge pages",
        ),
        (
            "  - {name: a, image: busybox:1}\n",
            "  volumes:\n  - {name: h, emptyDir: {medium: HugePages-big}}\n",
            "spec.volumes[0].emptyDir.medium: \"HugePages-big\": \"big\" is not a page size",
        ),
        (
            "  - {name: a, image: busybox:1}\n",
            "  volumes:\n  - {name: h, emptyDir: {medium: Disk}}\n",
            "spec.volumes[0].emptyDir.medium: \"Disk\": must be \"\", \"Memory\", \"HugePages\" or \"HugePages-<size>\"",
        ),
    ];
    for (containers, volumes, want) in refused {
        let err = spec::parse("pod.yaml", &image(containers, volumes))
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

/// downwardAPI volumes and `resourceFieldRef` as the API server checks them; file modes written
/// in YAML 1.1 octal (`0644`), as kubectl reads them.
#[test]
fn downward_api_items_are_checked_and_octal_modes_read() {
    let with = |volume: &str, env: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  volumes:\n  - name: info\n    downwardAPI:\n{volume}  containers:\n  - name: app\n    image: busybox:1\n{env}"
        )
    };
    let plans = spec::parse(
        "pod.yaml",
        &with(
            "      defaultMode: 0640\n      items:\n      - {path: a/name, fieldRef: {fieldPath: metadata.name}, mode: 0400}\n      - {path: mem, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}\n",
            "    env:\n    - {name: CPU, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}\n",
        ),
    )
    .expect("valid");
    let VolumeSource::DownwardApi { files } = &plans[0].volumes[0].source else {
        panic!("a downwardAPI volume: {:?}", plans[0].volumes[0]);
    };
    assert_eq!(files[0].path, std::path::Path::new("a/name"));
    assert_eq!(files[0].mode, 0o400);
    assert_eq!(files[1].mode, 0o640, "the defaultMode");
    assert_eq!(
        files[1].value,
        spec::DownwardValue::Resource(spec::ResourceRef {
            container: "app".into(),
            resource: "limits.memory".into(),
            divisor: 1 << 20,
        })
    );
    assert_eq!(
        plans[0].containers[0].env[0].value,
        EnvValue::ResourceRef(spec::ResourceRef {
            container: "app".into(),
            resource: "requests.cpu".into(),
            divisor: 1,
        })
    );

    let item = |item: &str| with(&format!("      items:\n      - {item}\n"), "");
    let cases = [
        (
            item("{path: ../x, fieldRef: {fieldPath: metadata.name}}"),
            "spec.volumes[0].downwardAPI.items[0].path: \"../x\" must be a relative path without '..'",
        ),
        (
            item("{path: /x, fieldRef: {fieldPath: metadata.name}}"),
            "spec.volumes[0].downwardAPI.items[0].path: \"/x\" must be a relative path",
        ),
        (
            item("{path: x, fieldRef: {fieldPath: status.podIP}}"),
            "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath: \"status.podIP\": a downwardAPI volume holds metadata.name",
        ),
        (
            item("{path: x}"),
            "spec.volumes[0].downwardAPI.items[0]: needs exactly one of fieldRef and resourceFieldRef",
        ),
        (
            item("{path: x, mode: 01000, fieldRef: {fieldPath: metadata.name}}"),
            "spec.volumes[0].downwardAPI.items[0].mode: 512: must be a number between 0 and 0777",
        ),
        (
            item("{path: x, resourceFieldRef: {resource: limits.cpu}}"),
            "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName: required",
        ),
        (
            item("{path: x, resourceFieldRef: {containerName: web, resource: limits.cpu}}"),
            "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName: \"web\" is not a container of this pod",
        ),
        (
            item(
                "{path: x, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 1Mi}}",
            ),
            "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.divisor: \"1Mi\": must be one of 1m, 1",
        ),
        (
            item("{path: x, resourceFieldRef: {containerName: app, resource: limits.gpu}}"),
            "spec.volumes[0].downwardAPI.items[0].resourceFieldRef.resource: \"limits.gpu\": must be limits.cpu",
        ),
        (
            with(
                "      items:\n      - {path: x, fieldRef: {fieldPath: metadata.name}}\n      - {path: x, fieldRef: {fieldPath: metadata.uid}}\n",
                "",
            ),
            "spec.volumes[0].downwardAPI.items[1].path: \"x\" is given twice",
        ),
        (
            with(
                "      items: []\n",
                "    env: [{name: X, valueFrom: {resourceFieldRef: {resource: requests.ephemeral-storage}}}]\n",
            ),
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource: \"requests.ephemeral-storage\": not supported by podkit",
        ),
    ];
    for (yaml, want) in cases {
        let err = spec::parse("pod.yaml", &yaml).expect_err(want).to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}\nfor:\n{yaml}");
    }
}

/// The host's namespaces: the pod gets the host's hostname, and a port is the host's own (no
/// hostPort is published through a relay).
#[test]
fn host_namespaces_give_the_hosts_name_and_ports() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  hostIPC: true\n  hostPID: true\n  hostname: mine\n  containers:\n  - name: app\n    image: busybox:1\n    ports: [{containerPort: 8080, hostPort: 8080}]\n";
    let plans = spec::parse("pod.yaml", yaml).expect("valid");
    let plan = &plans[0];
    assert!(plan.host_network && plan.host_ipc && plan.host_pid);
    assert_eq!(
        std::ffi::OsString::from(&plan.hostname),
        nix::unistd::gethostname().expect("hostname")
    );
    assert!(plan.containers[0].host_ports.is_empty());
    assert!(
        plan.ignored.iter().any(|f| f.starts_with("spec.hostname")),
        "{:?}",
        plan.ignored
    );
}

/// `supplementalGroupsPolicy: Strict` reaches the image container; Windows-only options are
/// listed as ignored, as kubelet on Linux ignores them.
#[test]
fn strict_supplemental_groups_and_windows_options() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {supplementalGroupsPolicy: Strict, supplementalGroups: [4000], windowsOptions: {runAsUserName: u}}\n  containers:\n  - name: app\n    image: busybox:1\n    securityContext: {windowsOptions: {runAsUserName: u}}\n";
    let plans = spec::parse("pod.yaml", yaml).expect("valid");
    let Runs::Image(run) = &plans[0].containers[0].runs else {
        panic!("an image container")
    };
    assert!(run.strict_groups);
    assert_eq!(run.supplemental_groups, vec![4000]);
    for field in [
        "spec.securityContext.windowsOptions",
        "spec.containers[0].securityContext.windowsOptions",
    ] {
        assert!(
            plans[0].ignored.contains(&field.to_owned()),
            "{:?}",
            plans[0].ignored
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = pod(
        "  restartPolicy: Sometimes\n",
        "    comand: [x]\n    workingDir: tmp\n",
    );
    let msg = spec::parse("pod.yaml", &yaml)
        .expect_err("three problems")
        .to_string();
    assert!(msg.contains("3 problems"), "{msg}");
}

#[test]
fn invalid_yaml_names_the_line() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   bad: indent\n";
    let msg = spec::parse("pod.yaml", yaml)
        .expect_err("bad yaml")
        .to_string();
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn env_references_expand_like_kubernetes() {
    let env = |name: &str| (name == "POD").then_some("web");
    assert_eq!(
        spec::expand("--name=$(POD) $$(POD) $(NOPE)", env),
        "--name=web $(POD) $(NOPE)"
    );
}

#[test]
fn every_example_manifest_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_podkit"))
                .args(["apply", "--dry-run", "-f"])
                .arg(&path)
                .output()
                .expect("podkit apply --dry-run");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "the examples are there: {checked}");
}

/// Without the host-process annotation a container runs from its image: no command needed,
/// Kubernetes' pull-policy defaults, the image-only securityContext fields honoured.
#[test]
fn containers_run_from_their_images_unless_marked_host_processes() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: mixed
  annotations: {podkit.io/host-process: "tail"}
spec:
  volumes: [{name: v, emptyDir: {}}]
  containers:
  - name: web
    image: nginx:1.14.2
    volumeMounts: [{name: v, mountPath: /etc/nginx/conf.d}]
    securityContext:
      capabilities: {drop: [all], add: [NET_BIND_SERVICE]}
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
  - {name: latest, image: busybox, command: [sh, -c], args: ["echo $(X)"], env: [{name: X, value: why}]}
  - {name: pinned, image: "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
  - {name: never, image: "registry.example:5000/team/app:v1", imagePullPolicy: Never}
  - name: tail
    image: podkit
    command: [podkit, tail]
    securityContext: {privileged: false, allowPrivilegeEscalation: true}
"#;
    let plans = spec::parse("mixed.yaml", yaml).expect("valid");
    let plan = &plans[0];
    let run = |i: usize| match &plan.containers[i].runs {
        Runs::Image(run) => run.clone(),
        Runs::Host => panic!("{} runs from its image", plan.containers[i].name),
    };
    let web = run(0);
    assert_eq!(web.image, "nginx:1.14.2");
    assert!(web.command.is_empty() && web.args.is_empty());
    assert_eq!(web.pull_policy, PullPolicy::IfNotPresent);
    // Any case, as containerd reads the names (a manifest of sock-shop drops `all`).
    assert_eq!(web.drop_capabilities, ["all"]);
    assert_eq!(web.add_capabilities, ["NET_BIND_SERVICE"]);
    assert!(web.read_only_root && web.no_new_privileges && !web.privileged);

    let latest = run(1);
    assert_eq!(latest.pull_policy, PullPolicy::Always, "no tag is :latest");
    assert_eq!(
        (latest.command, latest.args),
        (
            vec!["sh".to_owned(), "-c".to_owned()],
            vec!["echo $(X)".to_owned()]
        )
    );
    assert_eq!(run(2).pull_policy, PullPolicy::IfNotPresent, "a digest");
    assert_eq!(run(3).pull_policy, PullPolicy::Never);
    assert_eq!(plan.containers[4].runs, Runs::Host);
    assert_eq!(plan.containers[4].argv, ["podkit", "tail"]);

    // Host processes only with supplementalGroups: refused there.
    // The pod's supplementalGroups reach image containers (a host process could not take them).
    let tail = "  - name: tail\n    image: podkit\n    command: [podkit, tail]\n    securityContext: {privileged: false, allowPrivilegeEscalation: true}\n";
    let images_only = yaml
        .replace(tail, "")
        .replace("  annotations: {podkit.io/host-process: \"tail\"}\n", "")
        .replace(
            "spec:\n",
            "spec:\n  securityContext: {supplementalGroups: [5000]}\n",
        );
    let plans = spec::parse("images.yaml", &images_only).expect("valid");
    let Runs::Image(web) = &plans[0].containers[0].runs else {
        panic!("an image container")
    };
    assert_eq!(web.supplemental_groups, [5000]);

    let refused = [
        (
            yaml.replace("image: nginx:1.14.2", "image: 'Nginx:UPPER'"),
            "spec.containers[0].image: InvalidImageName",
        ),
        (
            yaml.replace("    image: nginx:1.14.2\n", ""),
            "spec.containers[0].image: required: the container runs from its image",
        ),
        (
            yaml.replace("host-process: \"tail\"", "host-process: \"tail,nope\""),
            "metadata.annotations[\"podkit.io/host-process\"]: \"nope\" is no container of the pod",
        ),
        (
            yaml.replace("imagePullPolicy: Never", "imagePullPolicy: Sometimes"),
            "spec.containers[3].imagePullPolicy: \"Sometimes\": must be Always, IfNotPresent or Never",
        ),
        (
            yaml.replace("mountPath: /etc/nginx/conf.d", "mountPath: /"),
            "spec.containers[0].volumeMounts[0].mountPath: \"/\" would hide the container's whole filesystem",
        ),
        (
            yaml.replace("privileged: false", "privileged: true"),
            "spec.containers[4].securityContext.privileged: not supported by podkit",
        ),
        (
            yaml.replace("add: [NET_BIND_SERVICE]", "add: [net-admin]"),
            "spec.containers[0].securityContext.capabilities.add[0]: \"net-admin\" is not a capability name",
        ),
        (
            yaml.replace(
                "spec:\n",
                "spec:\n  securityContext: {supplementalGroups: [5000]}\n",
            ),
            "spec.securityContext.supplementalGroups: not supported for host-process container \"tail\"",
        ),
        (
            yaml.replace(
                "      allowPrivilegeEscalation: false\n",
                "      allowPrivilegeEscalation: false\n      privileged: true\n",
            ),
            "spec.containers[0].securityContext.allowPrivilegeEscalation: false cannot be set with privileged: true",
        ),
    ];
    for (yaml, want) in refused {
        let err = spec::parse("mixed.yaml", &yaml)
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

/// `runtimeClassName` takes its handler from a RuntimeClass in the same file, else from podkit's
/// configuration (`$PODKIT_CONFIG/runtimeclasses`); one defined nowhere is refused, as the API
/// server's admission refuses it. `hostAliases`, `dnsPolicy` and `dnsConfig` are honoured for
/// image pods with the API server's rules, refused for host processes (which see the host's
/// files).
#[test]
fn runtime_classes_host_aliases_and_dns_config() {
    let class = "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: fast}\nhandler: crun\nscheduling: {nodeSelector: {a: b}}\n---\n";
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  runtimeClassName: fast\n  hostAliases: [{ip: 10.0.0.1, hostnames: [a.local, b]}]\n  dnsPolicy: None\n  dnsConfig: {nameservers: [192.0.2.1], searches: [x.example], options: [{name: ndots, value: '1'}, {name: rotate}]}\n  containers:\n  - {name: app, image: busybox:1}\n";
    let plans = spec::parse("f.yaml", &format!("{class}{pod}")).expect("valid");
    let plan = &plans[0];
    assert_eq!(plan.runtime_class.as_deref(), Some("fast"));
    assert_eq!(plan.runtime_handler.as_deref(), Some("crun"));
    assert!(
        plan.ignored
            .contains(&"RuntimeClass \"fast\": scheduling".to_owned()),
        "{:?}",
        plan.ignored
    );
    assert_eq!(
        plan.host_aliases,
        [(
            "10.0.0.1".to_owned(),
            vec!["a.local".to_owned(), "b".to_owned()]
        )]
    );
    assert!(plan.dns.policy_none);
    assert_eq!(plan.dns.nameservers, ["192.0.2.1"]);
    assert_eq!(plan.dns.searches, ["x.example"]);
    assert_eq!(
        plan.dns.options,
        [
            ("ndots".to_owned(), Some("1".to_owned())),
            ("rotate".to_owned(), None)
        ]
    );

    // Not in the file: parse leaves it for load, which reads podkit's configuration.
    let plans = spec::parse("f.yaml", pod).expect("valid");
    assert_eq!(plans[0].runtime_handler, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, pod).expect("write");
    let config = dir.path().join("config");
    let dry_run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_podkit"))
            .args(["apply", "--dry-run", "-f"])
            .arg(&file)
            .env("PODKIT_CONFIG", &config)
            .env("PODKIT_ROOT", dir.path().join("state"))
            .env("PODKIT_STORAGE", dir.path().join("storage"))
            .output()
            .expect("run podkit")
    };
    let out = dry_run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("pod \"p\": spec.runtimeClassName: RuntimeClass \"fast\" not found")
            && err.contains(&format!("{}", config.join("runtimeclasses").display())),
        "{err}"
    );
    std::fs::create_dir_all(config.join("runtimeclasses")).expect("mkdir");
    std::fs::write(
        config.join("runtimeclasses/fast.yaml"),
        class.trim_end_matches("---\n"),
    )
    .expect("write");
    let out = dry_run();
    assert!(
        out.status.success(),
        "a configured class: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(config.join("runtimeclasses/bad.yaml"), pod).expect("write");
    let out = dry_run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: document 1: kind: only RuntimeClasses belong in this directory"),
        "{err}"
    );

    let host = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {podkit.io/host-process: 'true'}\nspec:\n  containers:\n  - {name: app, command: [sleep, '1']}\n";
    let refused = [
        (
            format!(
                "{class}{}",
                host.replace("spec:\n", "spec:\n  runtimeClassName: fast\n")
            ),
            "spec.runtimeClassName: \"fast\": every container of the pod is a host process",
        ),
        (
            host.replace(
                "spec:\n",
                "spec:\n  hostAliases: [{ip: 1.2.3.4, hostnames: [a]}]\n",
            ),
            "spec.hostAliases: host processes read the host's /etc/hosts",
        ),
        (
            host.replace("spec:\n", "spec:\n  dnsConfig: {nameservers: [1.1.1.1]}\n"),
            "spec.dnsConfig: host processes read the host's /etc/resolv.conf",
        ),
        (
            format!("{class}{pod}").replace("handler: crun", "handler: Crun_2"),
            "document 1: handler: \"Crun_2\" must consist of lower case",
        ),
        (
            format!("{class}{pod}").replace("handler: crun\n", ""),
            "document 1: handler: required: the OCI runtime",
        ),
        (
            format!("{class}{pod}").replace("node.k8s.io/v1", "node.k8s.io/v1beta1"),
            "document 1: apiVersion: \"node.k8s.io/v1beta1\" is not supported for a RuntimeClass",
        ),
        (
            format!("{class}{pod}").replace("handler: crun", "handler: crun\nhandlr: x"),
            "document 1: handlr: not supported by podkit",
        ),
        (
            pod.replace("ip: 10.0.0.1", "ip: ten"),
            "spec.hostAliases[0].ip: \"ten\" is not an IP address",
        ),
        (
            pod.replace("dnsPolicy: None", "dnsPolicy: Cluster"),
            "spec.dnsPolicy: \"Cluster\": must be ClusterFirst, ClusterFirstWithHostNet, Default or None",
        ),
        (
            pod.replace("nameservers: [192.0.2.1]", "nameservers: []"),
            "spec.dnsConfig.nameservers: at least one is required when dnsPolicy is None",
        ),
        (
            pod.replace("192.0.2.1", "192.0.2.1, 192.0.2.2, 192.0.2.3, 192.0.2.4"),
            "spec.dnsConfig.nameservers: 4 given: at most 3",
        ),
        (
            pod.replace("{name: rotate}", "{value: x}"),
            "spec.dnsConfig.options[1].name: required, without spaces",
        ),
    ];
    for (yaml, want) in refused {
        let err = spec::parse("f.yaml", &yaml).expect_err(want).to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

/// A Secret in the file is read only as registry credentials for `imagePullSecrets`:
/// dockerconfigjson (base64 `data` or `stringData`) and the legacy dockercfg; the Secret's
/// credentials never show in the plan's Debug output.
#[test]
fn pull_secrets_come_from_secrets_in_the_file() {
    let secret = |body: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: reg}}\n{body}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  imagePullSecrets: [{{name: reg}}, {{name: other}}]\n  containers:\n  - {{name: app, image: busybox:1}}\n"
        )
    };
    let plans = spec::parse(
        "f.yaml",
        &secret("type: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '{\"auths\": {\"r.example\": {\"auth\": \"eDp5\"}}}'}\n"),
    )
    .expect("valid");
    assert_eq!(plans[0].pull_secret_names, ["reg", "other"]);
    assert_eq!(plans[0].pull_secrets.0.len(), 1, "only the one in the file");
    assert_eq!(
        plans[0].pull_secrets.0[0].1["auths"]["r.example"]["auth"],
        "eDp5"
    );
    assert!(
        !format!("{:?}", plans[0]).contains("eDp5"),
        "no secret in Debug"
    );
    // The legacy format: the registries at the top level.
    let plans = spec::parse(
        "f.yaml",
        &secret("type: kubernetes.io/dockercfg\ndata: {.dockercfg: eyJyLmV4YW1wbGUiOiB7ImF1dGgiOiAiZURwNSJ9fQ==}\n"),
    )
    .expect("valid");
    assert_eq!(
        plans[0].pull_secrets.0[0].1["auths"]["r.example"]["auth"],
        "eDp5"
    );
    for (body, want) in [
        (
            "type: kubernetes.io/dockerconfigjson\ndata: {.dockerconfigjson: '%%%'}\n",
            "document 1: data[\".dockerconfigjson\"]: not base64",
        ),
        (
            "type: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '[1]'}\n",
            "document 1: data[\".dockerconfigjson\"]: is not a docker config JSON object",
        ),
        (
            "type: kubernetes.io/dockerconfigjson\n",
            "document 1: data[\".dockerconfigjson\"]: required for a Secret of type \"kubernetes.io/dockerconfigjson\"",
        ),
    ] {
        let err = spec::parse("f.yaml", &secret(body))
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

/// A selector by expressions is taken when it selects the template's labels, and kept as given.
#[test]
fn workload_selectors_by_expression_are_accepted() {
    let text = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n  selector:\n    matchLabels: {app: a}\n    matchExpressions:\n    - {key: tier, operator: In, values: [db, cache]}\n    - {key: canary, operator: DoesNotExist}\n  template:\n    metadata: {labels: {app: a, tier: db}}\n    spec: {containers: [{name: c, image: nginx}]}\n";
    let manifest = spec::parse_manifest("sts.yaml", text).expect("accepted");
    let selector = &manifest.objects[0].value["spec"]["selector"];
    assert_eq!(selector["matchLabels"]["app"], "a");
    assert_eq!(selector["matchExpressions"][1]["operator"], "DoesNotExist");
}

/// `stdin`, `stdinOnce` and `tty` reach the plan as the manifest sets them (defaults false),
/// for each container on its own.
#[test]
fn stdin_and_tty_reach_the_plan() {
    let plan = &spec::parse(
        "pod.yaml",
        &pod("", "    stdin: true\n    stdinOnce: true\n    tty: true\n"),
    )
    .expect("valid")[0];
    let stdio = plan.containers[0].stdio;
    assert!(stdio.stdin && stdio.stdin_once && stdio.tty, "{stdio:?}");
    let plan = &spec::parse("pod.yaml", &pod("", "    tty: false\n")).expect("valid")[0];
    assert_eq!(plan.containers[0].stdio, spec::Stdio::default());
}
