//! Link flags for podkit's own binaries.

fn main() {
    // Relative relocations packed as a bitmap (DT_RELR; binutils 2.38, glibc 2.36): the dynamic
    // loader reads a few KiB of them at every start of `podkit` instead of 700 KiB of
    // `.rela.dyn`, which on a host that paged the binary out is disk reads on the start path of
    // `podkit run` (bench/pod.sh counts the major faults).
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
