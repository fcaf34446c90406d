//! The configuration format through its public API: a complete file, the
//! defaults, xl's command-line semantics, overrides, and every kind of error
//! with its exact position.

use std::path::{Path, PathBuf};

use dom0::config::{
    parse_file, parse_file_with_overrides, parse_str, Action, ConfigError, DiskSpec, DomainSpec,
    MacAddr, PagingMode, Settings, VifLink, VifSpec, ViolationPolicy,
};

const BASE: &str = "/etc/xen";

/// The two required keys, taking lines 1 and 2.
const MIN: &str = "name = \"web\"\nkernel = \"/boot/vmlinuz\"\n";

fn parse(src: &str) -> DomainSpec {
    parse_str(src, "vm.cfg", Path::new(BASE)).unwrap_or_else(|e| panic!("{e}"))
}

/// The error for `src`, as displayed.
fn err(src: &str) -> String {
    match parse_str(src, "vm.cfg", Path::new(BASE)) {
        Ok(spec) => panic!("parsed: {spec:?}"),
        Err(e) => e.to_string(),
    }
}

/// The error for the minimal config followed by `rest` (which starts on
/// line 3).
fn err3(rest: &str) -> String {
    err(&format!("{MIN}{rest}"))
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

#[test]
fn a_config_with_every_key() {
    let src = r#"# A web server.
name = "web-1"
type = "pv"
memory = 512
maxmem = 0x400            # hex, as xl allows
vcpus = 2
kernel = "/boot/vmlinuz-6.6"
ramdisk = 'initrd.img'    # relative: next to this file
root = "/dev/vda1 ro"
extra = 'console=hvc0 msg="hi"'
on_poweroff = "destroy"; on_reboot = "preserve"
on_crash = "restart"
paging = "direct"
paging_violation = "report"
disk = [ 'file:/srv/web/root.img,xvda,w',
         '/srv/web/data.img,raw,xvdb,rw',
         "format=raw, vdev=vdc, access=ro, target=/srv/web/a,b.img",
         'images/scratch.img,,hdd,r',
       ]
vif = [
    'mac=00:16:3e:01:02:03, bridge=xenbr0, vifname=web1-eth0',
    'switch=backend, model=virtio, type=vif',
]
"#;
    let spec = parse(src);
    let want = DomainSpec {
        name: "web-1".into(),
        memory_mib: 512,
        maxmem_mib: 1024,
        vcpus: 2,
        kernel: "/boot/vmlinuz-6.6".into(),
        ramdisk: Some("/etc/xen/initrd.img".into()),
        cmdline: "root=/dev/vda1 ro console=hvc0 msg=\"hi\"".into(),
        on_poweroff: Action::Destroy,
        on_reboot: Action::Preserve,
        on_crash: Action::Restart,
        disks: vec![
            DiskSpec {
                path: "/srv/web/root.img".into(),
                vdev: "xvda".into(),
                index: 0,
                read_only: false,
            },
            DiskSpec {
                path: "/srv/web/data.img".into(),
                vdev: "xvdb".into(),
                index: 1,
                read_only: false,
            },
            DiskSpec {
                path: "/srv/web/a,b.img".into(),
                vdev: "vdc".into(),
                index: 2,
                read_only: true,
            },
            DiskSpec {
                path: "/etc/xen/images/scratch.img".into(),
                vdev: "hdd".into(),
                index: 3,
                read_only: true,
            },
        ],
        vifs: vec![
            VifSpec {
                devid: 0,
                mac: mac("00:16:3e:01:02:03"),
                link: VifLink::Bridge("xenbr0".into()),
                vifname: Some("web1-eth0".into()),
            },
            VifSpec {
                devid: 1,
                mac: MacAddr::generated("web-1", 1),
                link: VifLink::Switch("backend".into()),
                vifname: None,
            },
        ],
        paging: PagingMode::Direct,
        paging_violation: ViolationPolicy::Report,
    };
    assert_eq!(spec, want);
    // What the daemon stores and sends.
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["on_reboot"], "preserve");
    assert_eq!(json["paging"], "direct");
    assert_eq!(json["vifs"][0]["mac"], "00:16:3e:01:02:03");
    assert_eq!(json["vifs"][1]["link"]["switch"], "backend");
    assert_eq!(json["disks"][2]["read_only"], true);
    assert_eq!(serde_json::from_value::<DomainSpec>(json).unwrap(), spec);
    // And it renders back to the same thing.
    assert_eq!(parse(&spec.to_config()), spec);
}

#[test]
fn defaults() {
    let spec = parse(MIN);
    assert_eq!(spec.memory_mib, 128);
    assert_eq!(spec.maxmem_mib, 128);
    assert_eq!(spec.vcpus, 1);
    assert_eq!(spec.ramdisk, None);
    assert_eq!(spec.cmdline, "");
    assert_eq!(
        (spec.on_poweroff, spec.on_reboot, spec.on_crash),
        (Action::Destroy, Action::Restart, Action::Destroy)
    );
    assert!(spec.disks.is_empty() && spec.vifs.is_empty());
    // maxmem follows memory when unset.
    assert_eq!(parse(&format!("{MIN}memory = 2048")).maxmem_mib, 2048);
}

#[test]
fn syntax_details() {
    // ';' and newlines separate settings, lists span lines and may end with
    // a comma, comments go anywhere outside strings, CRLF is fine.
    let spec = parse(
        "name='a.b';kernel=\"/k#1\" # c\r\nvif=[\r\n'bridge=br0', # one\r\n\r\n 'switch=s' , ]\r\nvcpus=3;",
    );
    assert_eq!(spec.name, "a.b");
    assert_eq!(spec.kernel, PathBuf::from("/k#1"));
    assert_eq!(spec.vifs.len(), 2);
    assert_eq!(spec.vcpus, 3);
    // Escapes as xl reads them.
    let spec = parse(&format!("{MIN}extra = \"a\\\"b\\\\c \\x41\\101 \\'q\\'\""));
    assert_eq!(spec.cmdline, "a\"b\\c AA 'q'");
    // An empty list is a list.
    assert!(parse(&format!("{MIN}disk = [ ]\nvif = []"))
        .disks
        .is_empty());
}

#[test]
fn xl_command_line_semantics() {
    let cmdline = |rest: &str| parse(&format!("{MIN}{rest}")).cmdline;
    assert_eq!(cmdline("root = '/dev/xvda1'"), "root=/dev/xvda1");
    assert_eq!(cmdline("extra = 'quiet'"), "quiet");
    // root comes first whatever the order in the file.
    assert_eq!(
        cmdline("extra = 'quiet'\nroot = '/dev/xvda1 ro'"),
        "root=/dev/xvda1 ro quiet"
    );
    assert_eq!(
        cmdline("cmdline = 'console=hvc0 root=/dev/vda'"),
        "console=hvc0 root=/dev/vda"
    );
    // cmdline with an empty root or extra is fine (lets an override drop them).
    assert_eq!(cmdline("cmdline = 'ro'\nextra = ''\nroot = \"\""), "ro");
    // += appends, as in xl.
    assert_eq!(cmdline("extra = 'a'\nextra += ' b'"), "a b");
    // Where xl would warn and ignore, we refuse, at the ignored key.
    assert_eq!(
        err3("cmdline = 'ro'\nextra = 'quiet'"),
        "vm.cfg:4:1: extra cannot be combined with cmdline (set at line 3): xl would ignore extra; put the whole command line in cmdline"
    );
    assert_eq!(
        err3("root = '/dev/vda'\ncmdline = 'ro'"),
        "vm.cfg:3:1: root cannot be combined with cmdline (set at line 4): xl would ignore root; put the whole command line in cmdline"
    );
    // The guest gets printable text only, and a bounded amount of it.
    assert_eq!(
        err3("extra = 'a\\tb'"),
        "vm.cfg:3:11: the kernel command line cannot contain control characters (found U+0009); the guest receives printable text only"
    );
    let long = "x".repeat(4090);
    assert_eq!(
        err3(&format!("root = '/dev/vda'\nextra = '{long}'")),
        "vm.cfg:4:9: the kernel command line is 4104 bytes long; at most 4095 fit"
    );
    assert_eq!(
        cmdline(&format!("cmdline = '{}'", "y".repeat(4095))).len(),
        4095
    );
}

#[test]
fn relative_paths_are_relative_to_the_config_directory() {
    let spec = parse(
        "name = 'a'\nkernel = 'boot/vmlinuz'\nramdisk = '../initrd'\ndisk = [ 'd.img,,xvda', 'vdev=xvdb,target=sub/e.img' ]",
    );
    assert_eq!(spec.kernel, PathBuf::from("/etc/xen/boot/vmlinuz"));
    assert_eq!(spec.ramdisk, Some(PathBuf::from("/etc/xen/../initrd")));
    assert_eq!(spec.disks[0].path, PathBuf::from("/etc/xen/d.img"));
    assert_eq!(spec.disks[1].path, PathBuf::from("/etc/xen/sub/e.img"));
    // Absolute paths are kept as written.
    assert_eq!(parse(MIN).kernel, PathBuf::from("/boot/vmlinuz"));
    // A relative base directory is taken from the current directory.
    let spec = parse_str(
        MIN.replace("/boot/", "").as_str(),
        "vm.cfg",
        Path::new("conf"),
    )
    .unwrap();
    assert_eq!(
        spec.kernel,
        std::env::current_dir().unwrap().join("conf/vmlinuz")
    );
    assert!(spec.kernel.is_absolute());
    assert_eq!(
        err("name = 'a'\nkernel = ''"),
        "vm.cfg:2:10: kernel must not be empty"
    );
}

#[test]
fn unknown_keys_and_typos() {
    assert_eq!(
        err3("memroy = 512"),
        "vm.cfg:3:1: unknown key 'memroy' (did you mean 'memory'?)"
    );
    assert_eq!(
        err3("  Memory = 512"),
        "vm.cfg:3:3: unknown key 'Memory' (did you mean 'memory'?)"
    );
    assert_eq!(
        err3("on-reboot = 'restart'"),
        "vm.cfg:3:1: unknown key 'on-reboot' (did you mean 'on_reboot'?)"
    );
    assert_eq!(
        err3("vcpu = 2"),
        "vm.cfg:3:1: unknown key 'vcpu' (did you mean 'vcpus'?)"
    );
    assert_eq!(
        err3("disks = []"),
        "vm.cfg:3:1: unknown key 'disks' (did you mean 'disk'?)"
    );
    assert_eq!(err3("colour = 'blue'"), "vm.cfg:3:1: unknown key 'colour'");
    assert_eq!(
        err3("maxvcpus = 4"),
        "vm.cfg:3:1: the xl key 'maxvcpus' is not supported by dom0"
    );
    assert_eq!(
        err3("bootloader = 'pygrub'"),
        "vm.cfg:3:1: the xl key 'bootloader' is not supported by dom0"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        err3("memory = \"512\""),
        "vm.cfg:3:10: memory must be an integer number of MiB, found a string (write memory = 512, without quotes)"
    );
    assert_eq!(
        err3("memory = [512]"),
        "vm.cfg:3:10: memory must be an integer number of MiB, found a list"
    );
    assert_eq!(
        err3("vcpus = 'two'"),
        "vm.cfg:3:9: vcpus must be an integer, found a string"
    );
    assert_eq!(
        err("name = 5\nkernel = '/k'"),
        "vm.cfg:1:8: name must be a quoted string, found a number (write name = \"5\")"
    );
    assert_eq!(
        err("name = 'a'\nkernel = ['/k']"),
        "vm.cfg:2:10: kernel must be a quoted path, found a list"
    );
    assert_eq!(
        err3("disk = '/img,,xvda'"),
        "vm.cfg:3:8: disk must be a list of disk specifications, as in disk = [ '/path/disk.img,raw,xvda,rw' ], found a string (write disk = [ '/img,,xvda' ])"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0', 7 ]"),
        "vm.cfg:3:23: each vif entry must be a quoted specification string, found a number"
    );
    assert_eq!(err3("on_crash = 1"), "vm.cfg:3:12: on_crash must be a quoted action (destroy, restart or preserve), found a number (write on_crash = \"1\")");
}

#[test]
fn out_of_range() {
    assert_eq!(
        err3("vcpus = 0"),
        "vm.cfg:3:9: vcpus must be between 1 and 255, found 0"
    );
    assert_eq!(
        err3("vcpus = 256"),
        "vm.cfg:3:9: vcpus must be between 1 and 255, found 256"
    );
    assert_eq!(
        err3("memory = 4"),
        "vm.cfg:3:10: memory must be between 8 and 1048576 MiB, found 4"
    );
    assert_eq!(
        err3("memory = 0x100001"),
        "vm.cfg:3:10: memory must be between 8 and 1048576 MiB, found 1048577"
    );
    assert_eq!(
        err3("memory = 512\nmaxmem = 256"),
        "vm.cfg:4:10: maxmem (256 MiB) must be at least memory (512 MiB, set at line 3)"
    );
    assert_eq!(
        err3("maxmem = 64"),
        "vm.cfg:3:10: maxmem (64 MiB) must be at least memory (128 MiB, the default)"
    );
    assert_eq!(
        err3("memory = 99999999999999999999"),
        "vm.cfg:3:10: the number 99999999999999999999 is too large"
    );
    assert_eq!(
        err3("memory = 0512"),
        "vm.cfg:3:10: the number 0512 has a leading zero, which xl reads as octal; write it without the leading zero (or as 0x hexadecimal)"
    );
    assert_eq!(
        err3("memory = 512M"),
        "vm.cfg:3:10: '512M' is not a number: numbers are plain decimal or 0x hexadecimal, without a unit"
    );
    assert_eq!(err3("vcpus = -1"), "vm.cfg:3:9: expected a value (a quoted string, a number or a list), found '-1'; negative numbers are not allowed");
}

#[test]
fn quoting_errors() {
    assert_eq!(
        err("name = \"web'\nkernel = '/k'"),
        "vm.cfg:1:8: unterminated string: the closing \" is missing on this line"
    );
    assert_eq!(
        err("name = 'web"),
        "vm.cfg:1:8: unterminated string: the closing ' is missing on this line"
    );
    assert_eq!(
        err("name = web\nkernel = '/k'"),
        "vm.cfg:1:8: expected a value (a quoted string, a number or a list), found 'web'; strings must be quoted, as in name = \"web\""
    );
    assert_eq!(
        err3("extra = 'a\\qb'"),
        "vm.cfg:3:11: unknown escape '\\q' in a string (write '\\\\' for a backslash)"
    );
    assert_eq!(
        err3("extra = 'a\\x4'"),
        "vm.cfg:3:11: the escape \\x must be followed by two hexadecimal digits"
    );
    assert_eq!(
        err3("extra = 'a\\0'"),
        "vm.cfg:3:11: this escape stands for a NUL character, which a string cannot contain"
    );
    assert_eq!(err3("extra = 'a' 'b'"), "vm.cfg:3:13: expected ';' or the end of the line after the value of 'extra', found a string");
    assert_eq!(
        err3("memory 512"),
        "vm.cfg:3:8: expected '=' after 'memory', found the number 512"
    );
    assert_eq!(err3("memory ="), "vm.cfg:3:9: expected a value (a quoted string, a number or a list), found the end of the file");
    assert_eq!(
        err3("= 5"),
        "vm.cfg:3:1: expected a setting (KEY = VALUE), found '='"
    );
    assert_eq!(
        err3("'name' = 5"),
        "vm.cfg:3:1: expected a setting (KEY = VALUE), found a string"
    );
    assert_eq!(
        err3("vcpus = 1;;"),
        "vm.cfg:3:11: unexpected ';' with no setting before it"
    );
    assert_eq!(
        err3("vcpus = \u{1}"),
        "vm.cfg:3:9: unexpected control character U+0001"
    );
}

#[test]
fn unterminated_lists() {
    assert_eq!(
        err3("disk = [ '/a,,xvda',\n  '/b,,xvdb'\n"),
        "vm.cfg:3:8: unterminated list: this '[' is never closed"
    );
    assert_eq!(
        err3("disk = [ '/a,,xvda',\nvcpus = 2\n"),
        "vm.cfg:4:1: expected a list item (a quoted string or a number) or ']' in the list opened at line 3, column 8, found 'vcpus'"
    );
    assert_eq!(
        err3("disk = [ '/a,,xvda'\nvcpus = 2 ]"),
        "vm.cfg:4:1: expected ',' or ']' in the list opened at line 3, column 8, found 'vcpus'"
    );
    assert_eq!(
        err3("disk = [ , ]"),
        "vm.cfg:3:10: unexpected ',' in the list opened at line 3, column 8: an item is missing"
    );
    assert_eq!(
        err3("disk = [ '/a,,xvda' ] ]"),
        "vm.cfg:3:23: expected ';' or the end of the line after the value of 'disk', found ']'"
    );
}

#[test]
fn duplicates() {
    assert_eq!(
        err3("vcpus = 1\n\nvcpus = 2"),
        "vm.cfg:5:1: duplicate key 'vcpus' (first set at line 3)"
    );
    assert_eq!(
        err3("vif = ['bridge=a']\nvif += 5"),
        "vm.cfg:4:5: '+=' cannot be used with a number"
    );
    assert_eq!(
        err3("vif = ['bridge=a']\nvif += 'switch=b'"),
        "vm.cfg:4:8: '+=' cannot add a string to 'vif', which is a list (set at line 3)"
    );
    // += builds lists, as in xl.
    let spec = parse(&format!("{MIN}vif = ['bridge=a']\nvif += ['switch=b']"));
    assert_eq!(spec.vifs[1].link, VifLink::Switch("b".into()));
    // += on an unset key sets it.
    assert_eq!(parse(&format!("{MIN}extra += 'x'")).cmdline, "x");
}

#[test]
fn missing_required_keys_are_reported_at_the_end_of_the_file() {
    assert_eq!(
        err("name = 'web'\nvcpus = 2\n"),
        "vm.cfg:3:1: the required key 'kernel' is not set (add kernel = \"/path/to/kernel\")"
    );
    assert_eq!(
        err("kernel = '/k'"),
        "vm.cfg:1:14: the required key 'name' is not set (add name = \"NAME\")"
    );
    assert_eq!(
        err(""),
        "vm.cfg:1:1: the required key 'name' is not set (add name = \"NAME\")"
    );
}

#[test]
fn bad_names() {
    let name_err = |n: &str| err(&format!("name = '{n}'\nkernel = '/k'"));
    assert_eq!(
        name_err("web 1"),
        "vm.cfg:1:12: the domain name cannot contain ' '; use A-Z, a-z, 0-9, '_', '.' and '-'"
    );
    assert_eq!(
        name_err("-web"),
        "vm.cfg:1:9: the domain name cannot start with '.' or '-'"
    );
    assert_eq!(
        name_err(""),
        "vm.cfg:1:8: the domain name must not be empty"
    );
    assert_eq!(
        name_err("42"),
        "vm.cfg:1:9: the domain name cannot be all digits: it would be taken for a domain ID"
    );
    assert_eq!(
        name_err(&"a".repeat(65)),
        "vm.cfg:1:73: the domain name is 65 characters long; at most 64 are allowed"
    );
    assert_eq!(
        parse(&format!("name = '{}'\nkernel = '/k'", "a".repeat(64)))
            .name
            .len(),
        64
    );
    assert_eq!(err("name = 'web'\nkernel = '/k'\ntype = 'hvm'"), "vm.cfg:3:8: type 'hvm' is not supported: dom0 runs paravirtualized domains only (type = \"pv\")");
}

#[test]
fn actions() {
    assert_eq!(
        err3("on_crash = 'coredump-destroy'"),
        "vm.cfg:3:12: the on_crash action 'coredump-destroy' is not supported: dom0 supports destroy, restart and preserve"
    );
    assert_eq!(
        err3("on_reboot = 'rename-restart'"),
        "vm.cfg:3:13: the on_reboot action 'rename-restart' is not supported: dom0 supports destroy, restart and preserve"
    );
    assert_eq!(
        err3("on_poweroff = 'destory'"),
        "vm.cfg:3:15: unknown on_poweroff action 'destory' (expected destroy, restart or preserve) (did you mean 'destroy'?)"
    );
    assert_eq!(
        err3("on_poweroff = 'halt'"),
        "vm.cfg:3:15: unknown on_poweroff action 'halt' (expected destroy, restart or preserve)"
    );
}

#[test]
fn paging_mode() {
    assert_eq!(parse(MIN).paging, PagingMode::Native, "the default");
    assert_eq!(
        parse(&format!("{MIN}paging = 'native'")).paging,
        PagingMode::Native
    );
    assert_eq!(
        parse(&format!("{MIN}paging = \"direct\"")).paging,
        PagingMode::Direct
    );
    assert_eq!(
        err3("paging = 'drect'"),
        "vm.cfg:3:10: unknown paging 'drect' (expected native or direct) (did you mean 'direct'?)"
    );
    assert_eq!(
        err3("paging = 'shadow'"),
        "vm.cfg:3:10: unknown paging 'shadow' (expected native or direct)"
    );
    assert_eq!(
        err3("paging = 1"),
        "vm.cfg:3:10: paging must be a quoted string (native or direct), found a number (write paging = \"1\")"
    );
    assert_eq!(
        err3("pagin = 'direct'"),
        "vm.cfg:3:1: unknown key 'pagin' (did you mean 'paging'?)"
    );
    assert_eq!(
        parse(MIN).paging_violation,
        ViolationPolicy::Kill,
        "the default"
    );
    assert_eq!(
        err3("paging_violation = 'reprot'"),
        "vm.cfg:3:20: unknown paging_violation 'reprot' (expected report or kill) (did you mean 'report'?)"
    );
    // Stored specs from before the keys read as native and kill.
    let mut json = serde_json::to_value(parse(MIN)).unwrap();
    json.as_object_mut().unwrap().remove("paging_violation");
    assert_eq!(
        serde_json::from_value::<DomainSpec>(json)
            .unwrap()
            .paging_violation,
        ViolationPolicy::Kill
    );
    let mut json = serde_json::to_value(parse(MIN)).unwrap();
    json.as_object_mut().unwrap().remove("paging");
    assert_eq!(
        serde_json::from_value::<DomainSpec>(json).unwrap().paging,
        PagingMode::Native
    );
}

#[test]
fn disk_errors() {
    // Columns point inside the string: the quote is column 10 here.
    assert_eq!(
        err3("disk = [ '/img,xvda,w' ]"),
        "vm.cfg:3:16: unknown disk format 'xvda' (the positional fields are target, format, vdev, access: leave the format empty, as in 'PATH,,xvda')"
    );
    assert_eq!(
        err3("disk = [ '/img,qcow2,xvda,w' ]"),
        "vm.cfg:3:16: disk format 'qcow2' is not supported: dom0 serves raw images only"
    );
    assert_eq!(
        err3("disk = [ 'format=vhd,vdev=xvda,target=/x' ]"),
        "vm.cfg:3:18: disk format 'vhd' is not supported: dom0 serves raw images only"
    );
    assert_eq!(
        err3("disk = [ '/img,,xvda,rx' ]"),
        "vm.cfg:3:22: unknown disk access 'rx' (expected r, ro, w or rw)"
    );
    assert_eq!(err3("disk = [ '/img' ]"), "vm.cfg:3:10: the disk specification has no vdev (the disk name the guest sees, such as xvda)");
    assert_eq!(
        err3("disk = [ ',,xvda' ]"),
        "vm.cfg:3:10: the disk specification has no target (the image file)"
    );
    assert_eq!(
        err3("disk = [ '/img,,xvda,cdrom' ]"),
        "vm.cfg:3:22: CD-ROM drives are not supported; dom0 attaches disks only"
    );
    assert_eq!(
        err3("disk = [ 'vdev=xvda, acess=r, target=/x' ]"),
        "vm.cfg:3:22: unknown disk parameter 'acess' (did you mean 'access'?)"
    );
    assert_eq!(
        err3("disk = [ '/img,,xvda,script=iscsi' ]"),
        "vm.cfg:3:22: the disk parameter 'script' is not supported by dom0"
    );
    assert_eq!(
        err3("disk = [ '/img,,xvda1' ]"),
        "vm.cfg:3:17: 'xvda1' names a partition; dom0 attaches whole disks (use 'xvda')"
    );
    assert_eq!(
        err3("disk = [ '/img,,hde' ]"),
        "vm.cfg:3:17: 'hde' is out of range: IDE disks go from hda to hdd"
    );
    assert_eq!(
        err3("disk = [ '/img,,nvme0n1' ]"),
        "vm.cfg:3:17: 'nvme0n1' is not a disk name: use xvdX, vdX, sdX or hdX (for example xvda)"
    );
    assert_eq!(err3("disk = [ '/img,,xvda,w,extra' ]"), "vm.cfg:3:24: too many positional fields at 'extra' (they are target, format, vdev, access)");
    // target= takes the rest of the string, as in xl: put it last.
    assert_eq!(
        parse(&format!("{MIN}disk = [ 'vdev=xvda, target=/x, access=r' ]")).disks[0].path,
        PathBuf::from("/x, access=r")
    );
}

#[test]
fn duplicate_vdevs() {
    assert_eq!(
        err3("disk = [ '/a,,xvda',\n         '/b,,xvda' ]"),
        "vm.cfg:4:15: the vdev 'xvda' is already used at line 3, column 15"
    );
    // Different names for the same disk index collide too.
    assert_eq!(
        err3("disk = [ '/a,,xvdb', 'vdev=vdb,target=/b' ]"),
        "vm.cfg:3:28: the vdev 'vdb' is the same disk (index 1) as 'xvdb' at line 3, column 15"
    );
    assert_eq!(
        err3("disk = [ '/a,,sda' ]\ndisk += [ '/b,,hda' ]"),
        "vm.cfg:4:16: the vdev 'hda' is the same disk (index 0) as 'sda' at line 3, column 15"
    );
}

#[test]
fn vif_errors() {
    assert_eq!(
        err3("vif = [ 'bridge=br0,mac=00:16:3e:zz:00:01' ]"),
        "vm.cfg:3:34: '00:16:3e:zz:00:01' is not a MAC address: expected six pairs of hex digits separated by ':', as in 02:16:3e:12:34:56"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0, mac=01:00:5e:00:00:01' ]"),
        "vm.cfg:3:26: the MAC address 01:00:5e:00:00:01 is a multicast address (lowest bit of the first byte set); an interface needs a unicast one"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0, switch=lan' ]"),
        "vm.cfg:3:22: switch= cannot be combined with bridge= (column 10): a vif connects either to a Linux bridge or to dom0's switch"
    );
    assert_eq!(
        err3("vif = [ 'brige=br0' ]"),
        "vm.cfg:3:10: unknown vif key 'brige' (did you mean 'bridge'?)"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0,rate=10Mb/s' ]"),
        "vm.cfg:3:21: the vif key 'rate' is not supported by dom0"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0,model=e1000' ]"),
        "vm.cfg:3:27: the vif model 'e1000' is not supported: dom0 gives guests virtio-net only (model=virtio)"
    );
    assert_eq!(
        err3("vif = [ '' ]"),
        "vm.cfg:3:9: the vif says neither bridge=NAME nor switch=NAME; dom0 has no default network (xl would assume bridge=xenbr0)"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0,mac=02:00:00:00:00:01', 'switch=s,mac=02:00:00:00:00:01' ]"),
        "vm.cfg:3:59: the MAC address 02:00:00:00:00:01 is already used by vif 0"
    );
    assert_eq!(
        err3("vif = [ 'bridge=br0,vifname=t0', 'bridge=br1,vifname=t0' ]"),
        "vm.cfg:3:46: the vifname 't0' is already used by another vif"
    );
}

#[test]
fn generated_macs_follow_name_and_position() {
    let spec = parse("name = 'db'\nkernel = '/k'\nvif = [ 'bridge=br0', 'switch=s' ]");
    assert_eq!(spec.vifs[0].mac, MacAddr::generated("db", 0));
    assert_eq!(spec.vifs[1].mac, MacAddr::generated("db", 1));
    assert!(spec
        .vifs
        .iter()
        .all(|v| v.mac.is_locally_administered() && !v.mac.is_multicast()));
    // Same config, same addresses.
    assert_eq!(
        parse("name = 'db'\nkernel = '/k'\nvif = [ 'bridge=br0', 'switch=s' ]"),
        spec
    );
}

#[test]
fn command_line_overrides() {
    let file =
        "name = 'web'\nkernel = 'vmlinuz'\nvcpus = 1\nextra = 'quiet'\ndisk = [ 'a.img,,xvda' ]\n";
    let mut s = Settings::parse(file, "/etc/xen/web.cfg", Path::new(BASE)).unwrap();
    s.apply_override("vcpus=4", Path::new("/home/me")).unwrap();
    s.apply_override("name=\"web2\"; memory = 256", Path::new("/home/me"))
        .unwrap();
    s.apply_override("extra += ' debug'", Path::new("/home/me"))
        .unwrap();
    s.apply_override("disk += [ 'b.img,,xvdb' ]", Path::new("/home/me"))
        .unwrap();
    let spec = s.resolve().unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.vcpus, spec.memory_mib),
        ("web2", 4, 256)
    );
    assert_eq!(spec.cmdline, "quiet debug");
    // The file's paths are relative to the file, the command line's to the
    // caller's directory.
    assert_eq!(spec.kernel, PathBuf::from("/etc/xen/vmlinuz"));
    assert_eq!(spec.disks[0].path, PathBuf::from("/etc/xen/a.img"));
    assert_eq!(spec.disks[1].path, PathBuf::from("/home/me/b.img"));

    // Errors name the command line; line N is the N-th override.
    let e = s
        .apply_override("vcpus = 0x1000", Path::new("/"))
        .and_then(|()| s.resolve())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "<command line>:5:1: duplicate key 'vcpus' (first set at line 1)"
    );
    s.apply_override("memroy=1", Path::new("/")).unwrap();
    assert_eq!(
        s.resolve().unwrap_err().to_string(),
        "<command line>:5:1: unknown key 'memroy' (did you mean 'memory'?)"
    );

    let mut s = Settings::parse(file, "web.cfg", Path::new(BASE)).unwrap();
    s.apply_override("vcpus=2", Path::new("/")).unwrap();
    let e = s.apply_override("name=web3", Path::new("/")).unwrap_err();
    assert_eq!(
        e,
        ConfigError {
            file: "<command line>".into(),
            line: 2,
            column: 6,
            message: "expected a value (a quoted string, a number or a list), found 'web3'; strings must be quoted, as in name = \"web3\"".into(),
        }
    );
    // A failed override changes nothing.
    assert_eq!(s.resolve().unwrap().name, "web");
    // Replacing cmdline on the command line leaves the file's extra in the
    // way, and says where it is; an empty extra clears it.
    s.apply_override("cmdline='console=hvc0'", Path::new("/"))
        .unwrap();
    assert_eq!(
        s.resolve().unwrap_err().to_string(),
        "web.cfg:4:1: extra cannot be combined with cmdline (set at <command line>:2): xl would ignore extra; put the whole command line in cmdline"
    );
    s.apply_override("extra=''", Path::new("/")).unwrap();
    assert_eq!(s.resolve().unwrap().cmdline, "console=hvc0");
}

/// A scratch directory for file tests, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dom0-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn files() {
    let dir = Scratch::new("files");
    let cfg = dir.0.join("web.cfg");
    std::fs::write(
        &cfg,
        "name = 'web'\nkernel = 'vmlinuz'\ndisk = [ 'root.img,,xvda' ]\n",
    )
    .unwrap();
    let spec = parse_file(&cfg).unwrap();
    assert_eq!(spec.kernel, dir.0.join("vmlinuz"));
    assert_eq!(spec.disks[0].path, dir.0.join("root.img"));

    let spec =
        parse_file_with_overrides(&cfg, &["kernel='other'", "vcpus=2"], Path::new("/srv")).unwrap();
    assert_eq!(spec.kernel, PathBuf::from("/srv/other"));
    assert_eq!(spec.vcpus, 2);

    let missing = dir.0.join("missing.cfg");
    let e = parse_file(&missing).unwrap_err();
    assert_eq!((e.line, e.column), (0, 0));
    assert!(
        e.to_string().starts_with(&format!(
            "{}: cannot read the configuration file: ",
            missing.display()
        )),
        "{e}"
    );

    let bad = dir.0.join("bad.cfg");
    std::fs::write(&bad, b"name = 'web'\nkernel = '/k\xff'\n").unwrap();
    let e = parse_file(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:13: the file is not valid UTF-8 text", bad.display())
    );

    let typo = dir.0.join("typo.cfg");
    std::fs::write(&typo, "name = 'web'\nkernel = '/k'\n\n  memroy = 5\n").unwrap();
    assert_eq!(
        parse_file(&typo).unwrap_err().to_string(),
        format!(
            "{}:4:3: unknown key 'memroy' (did you mean 'memory'?)",
            typo.display()
        )
    );
}

#[test]
fn error_display() {
    let e = ConfigError {
        file: "a.cfg".into(),
        line: 3,
        column: 7,
        message: "bad".into(),
    };
    assert_eq!(e.to_string(), "a.cfg:3:7: bad");
    let e = ConfigError {
        file: "a.cfg".into(),
        line: 0,
        column: 0,
        message: "unreadable".into(),
    };
    assert_eq!(e.to_string(), "a.cfg: unreadable");
}
