//! The hook-receiver bootstrap started without its configuration (outside Lambda, or a stack
//! missing a variable) exits at once with a failing code and says which variable, in words.

#[test]
fn without_its_configuration_the_bootstrap_says_what_is_missing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hook-receiver"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("the bootstrap starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it fails: {stderr}");
    assert!(stderr.contains("CAPSULE_STATE_TABLE is not set"), "it names the variable: {stderr}");
    assert!(!stderr.contains("Config("), "in words, not Debug: {stderr}");
}
