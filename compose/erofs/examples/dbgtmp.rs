fn main() {
    let tree = kiln_fstree::Tree::from_dir(std::path::Path::new(&std::env::args().nth(1).unwrap()))
        .unwrap();
    let level: u8 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(0);
    let opts = kiln_erofs::Options {
        compression: if level == 0 {
            kiln_erofs::Compression::None
        } else if level == 1 {
            kiln_erofs::Compression::Lz4
        } else {
            kiln_erofs::Compression::Lz4hc { level }
        },
        ..Default::default()
    };
    let mut f = std::fs::File::create(std::env::args().nth(2).unwrap()).unwrap();
    let t = std::time::Instant::now();
    let s = kiln_erofs::write(&tree, &opts, &mut f).unwrap();
    eprintln!("{s:?} {:?}", t.elapsed());
}
