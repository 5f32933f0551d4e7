//! Relays host ports into a pod's network namespace: the library behind `portfwd`,
//! `podkit port-forward` and the hostPort publishing of pods.
//!
//! Not built yet: see the portfwd issue. The crate exists so the workspace has its fixed shape.
