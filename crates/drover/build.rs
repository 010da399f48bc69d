//! Marks the PostgreSQL tests as ignored (visibly skipped) unless
//! `DROVER_TEST_POSTGRES_URL` is set when the tests are built, and the S3
//! ones unless `DROVER_TEST_MOTO` (moto's server) is.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(drover_pg)");
    println!("cargo::rustc-check-cfg=cfg(drover_moto)");
    println!("cargo::rerun-if-env-changed=DROVER_TEST_MOTO");
    if std::env::var_os("DROVER_TEST_MOTO").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=drover_moto");
    }
    println!("cargo::rerun-if-env-changed=DROVER_TEST_POSTGRES_URL");
    if std::env::var_os("DROVER_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=drover_pg");
    }
}
