//! Tests of the instance paths.

use super::*;

#[test]
fn the_default_instance_is_per_directory_and_stable() {
    let a = instance_name(None, Path::new("/srv/api"));
    assert!(a.starts_with("api-"), "{a}");
    assert_eq!(a, instance_name(None, Path::new("/srv/api")));
    assert_ne!(a, instance_name(None, Path::new("/home/me/api")));
    assert_eq!(instance_name(Some("web"), Path::new("/srv/api")), "web");
    assert!(instance_name(None, Path::new("/srv/my app!")).starts_with("my_app_-"));
}

#[test]
fn names_are_checked() {
    assert!(parse_name("web-1.prod").is_ok());
    for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
        assert!(parse_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_given_control_socket_keeps_its_pid_file_beside_it() {
    let p = resolve(Some("x"), Some(Path::new("/run/app/ctl.sock")), None).unwrap();
    assert_eq!(p.control, Path::new("/run/app/ctl.sock"));
    assert_eq!(p.pid_file, Path::new("/run/app/ctl.sock.pid"));
    let p = resolve(Some("x"), None, None).unwrap();
    assert_eq!(p.control, p.dir.join("control.sock"));
    assert_eq!(p.pid_file, p.dir.join("procwork.pid"));
    assert!(p.dir.ends_with("x"));
}
