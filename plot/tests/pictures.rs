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
