//! Every picture decodes as an image of the size it promises.

use plot::curves::EpochPoint;
use plot::misclassified::Mistake;

fn decoded_size(png: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory_with_format(png, image::ImageFormat::Png).expect("a PNG");
    (image.width(), image.height())
}

fn points() -> Vec<EpochPoint> {
    (1..=5)
        .map(|epoch| EpochPoint {
            epoch,
            train_loss: 1.0 / epoch as f64,
            test_loss: 1.1 / epoch as f64,
            train_accuracy: 0.8 + 0.02 * epoch as f64,
            test_accuracy: 0.79 + 0.015 * epoch as f64,
        })
        .collect()
}

#[test]
fn curves_png_and_svg_have_the_promised_size() {
    assert_eq!(
        decoded_size(&plot::curves::png_bytes(&points()).unwrap()),
        plot::curves::SIZE
    );
    let svg = plot::curves::svg(&points()).unwrap();
    let (w, h) = plot::curves::SIZE;
    assert!(
        svg.starts_with("<svg")
            && svg.contains(&format!("width=\"{w}\""))
            && svg.contains(&format!("height=\"{h}\""))
    );
    assert!(
        svg.contains("accuracy") && svg.contains("<polyline"),
        "labels and lines drawn"
    );
}

#[test]
fn confusion_heatmap_decodes() {
    let matrix: Vec<Vec<usize>> = (0..10)
        .map(|r| (0..10).map(|c| if r == c { 90 } else { r + c }).collect())
        .collect();
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let png = plot::confusion::png_bytes(&matrix, &names).unwrap();
    assert_eq!(decoded_size(&png), plot::confusion::SIZE);
}

#[test]
fn misclassified_grid_decodes_with_one_cell_per_image() {
    let pixels: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
    let mistakes: Vec<Mistake<'_>> = (0..8)
        .map(|_| Mistake {
            pixels: &pixels,
            truth: "Shirt",
            predicted: "T-shirt/top",
        })
        .collect();
    let png = plot::misclassified::png_bytes(&mistakes).unwrap();
    assert_eq!(decoded_size(&png), (6 * 150, 2 * 150));
    assert_eq!(plot::misclassified::size(8), (900, 300));
}

/// Runs `draw` on another thread and fails if it has not finished within five minutes: a
/// deadline that only catches a hang (a drawing takes milliseconds), so a slow or busy machine
/// never trips it.
fn within_deadline(what: &str, draw: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        draw();
        let _ = done.send(());
    });
    assert!(
        finished
            .recv_timeout(std::time::Duration::from_secs(300))
            .is_ok(),
        "{what}: drawing did not finish within 5 minutes (or panicked)"
    );
}

#[test]
fn curves_of_any_values_are_drawn_without_hanging_or_failing() {
    let point = |epoch, loss: f64, accuracy: f64| EpochPoint {
        epoch,
        train_loss: loss,
        test_loss: loss * 1.1,
        train_accuracy: accuracy,
        test_accuracy: accuracy,
    };
    let cases: Vec<(&str, Vec<EpochPoint>)> = vec![
        ("huge", vec![point(1, 2.3, 0.1), point(2, 7.35e34, 0.1)]),
        ("largest", vec![point(1, f64::MAX, 0.1), point(2, 1.0, 0.2)]),
        ("tiny", vec![point(1, 1e-300, 0.5), point(2, 2e-300, 0.5)]),
        (
            "NaN",
            vec![point(1, f64::NAN, f64::NAN), point(2, 1.0, 0.5)],
        ),
        (
            "infinite",
            vec![point(1, f64::INFINITY, 0.5), point(2, 1.0, 0.5)],
        ),
        ("negative", vec![point(1, -5.0, -0.5), point(2, -1.0, 1.5)]),
        ("constant", vec![point(1, 0.7, 0.9), point(2, 0.7, 0.9)]),
        ("one point", vec![point(1, 0.7, 0.9)]),
        ("none", vec![]),
        ("late epoch", vec![point(usize::MAX, 1.0, 0.5)]),
    ];
    for (what, points) in cases {
        within_deadline(what, move || {
            let png = plot::curves::png_bytes(&points).expect("a picture");
            assert_eq!(decoded_size(&png), plot::curves::SIZE);
            plot::curves::svg(&points).expect("an SVG");
        });
    }
}

/// DejaVu Sans with its `hhea` table filled with 0xFF (line height 0), which made the rasteriser
/// spin for good, is refused with the reason; the font itself is usable.
#[test]
fn a_damaged_font_is_refused_before_it_is_drawn_with() {
    let path = plot::FONT_CANDIDATES[0];
    let good = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{path}: {e}: `cargo xtask test` installs it first (apt-get install fonts-dejavu-core)"
        )
    });
    assert_eq!(plot::usable_font(&good), Ok(()));
    let damaged = damaged_hhea(&good);
    let defect = plot::usable_font(&damaged).unwrap_err();
    assert!(defect.contains("line height of 0"), "{defect}");
    assert!(plot::usable_font(b"not a font").is_err());
}

/// A copy of the TrueType font `font` whose `hhea` table is all 0xFF.
pub fn damaged_hhea(font: &[u8]) -> Vec<u8> {
    let mut bytes = font.to_vec();
    let be16 = |at: usize| usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
    let tables = be16(4);
    for k in 0..tables {
        let entry = 12 + 16 * k;
        if &bytes[entry..entry + 4] == b"hhea" {
            let be32 =
                |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let (offset, length) = (be32(entry + 8), be32(entry + 12));
            bytes[offset..offset + length].fill(0xFF);
            return bytes;
        }
    }
    panic!("no hhea table");
}
