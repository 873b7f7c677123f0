//! One test only: it changes the process environment.

use std::path::PathBuf;

use kiln_store::{Store, StoreError};

#[test]
fn default_root_precedence() {
    std::env::set_var("KILN_STORE", "/k/store");
    std::env::set_var("XDG_CACHE_HOME", "/xdg");
    std::env::set_var("HOME", "/home/u");
    assert_eq!(Store::default_root().unwrap(), PathBuf::from("/k/store"));
    std::env::set_var("KILN_STORE", "");
    assert_eq!(Store::default_root().unwrap(), PathBuf::from("/xdg/kiln"));
    std::env::remove_var("KILN_STORE");
    assert_eq!(Store::default_root().unwrap(), PathBuf::from("/xdg/kiln"));
    std::env::set_var("XDG_CACHE_HOME", "relative");
    assert_eq!(
        Store::default_root().unwrap(),
        PathBuf::from("/home/u/.cache/kiln")
    );
    std::env::remove_var("XDG_CACHE_HOME");
    assert_eq!(
        Store::default_root().unwrap(),
        PathBuf::from("/home/u/.cache/kiln")
    );
    std::env::remove_var("HOME");
    assert!(matches!(
        Store::default_root(),
        Err(StoreError::NoDefaultRoot)
    ));
}
