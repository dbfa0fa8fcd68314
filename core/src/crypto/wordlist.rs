//! The words of a short pairing code: 256 short, concrete English words, so two words carry 16
//! bits and read well over a phone call. Written out here rather than taken from a crate: the
//! packaged word lists on crates.io carry a copyleft licence or a random-number dependency this
//! project does not otherwise use, and 256 words are all a code needs.

/// The words, in order: a word's index is the byte it stands for.
pub(super) const WORDS: [&str; 256] = [
    "acorn", "agent", "alarm", "album", "alley", "amber", "anchor", "angle", "ankle", "apple",
    "apron", "arrow", "atlas", "attic", "autumn", "bacon", "badge", "bagel", "baker", "balloon",
    "bamboo", "banjo", "barrel", "basket", "beach", "beacon", "beetle", "bench", "berry",
    "bicycle", "blanket", "blossom", "bonnet", "bottle", "breeze", "brick", "bridge", "broom",
    "bubble", "bucket", "buffalo", "bundle", "butter", "cabin", "cactus", "camel", "candle",
    "canoe", "canyon", "carpet", "carrot", "castle", "cedar", "cello", "chalk", "cherry",
    "chimney", "cider", "circus", "clover", "cobra", "coconut", "comet", "compass", "copper",
    "cotton", "cougar", "crayon", "cricket", "crystal", "cupcake", "curtain", "daisy", "dancer",
    "desert", "diamond", "dinner", "dolphin", "donkey", "dragon", "drum", "eagle", "easel",
    "elbow", "elephant", "ember", "engine", "falcon", "feather", "fence", "fiddle", "finch",
    "flannel", "flute", "forest", "fossil", "fountain", "fox", "galaxy", "garden", "garlic",
    "gazelle", "ginger", "giraffe", "glacier", "glove", "goblet", "gondola", "gorilla", "granite",
    "grape", "gravel", "guitar", "hammer", "harbor", "harvest", "hazel", "hedgehog", "helmet",
    "heron", "honey", "hornet", "husky", "igloo", "iguana", "island", "ivory", "jacket", "jaguar",
    "jasmine", "jelly", "jigsaw", "jungle", "kayak", "kettle", "kitten", "koala", "ladder",
    "lagoon", "lantern", "lemon", "leopard", "lettuce", "lily", "lizard", "lobster", "locket",
    "lotus", "magnet", "mango", "maple", "marble", "meadow", "melon", "mitten", "monkey", "mosaic",
    "muffin", "museum", "mustard", "napkin", "nectar", "needle", "noodle", "nutmeg", "oasis",
    "ocean", "octopus", "olive", "onion", "orange", "orchid", "otter", "oyster", "paddle", "panda",
    "parrot", "peach", "peanut", "pebble", "pelican", "pencil", "pepper", "piano", "pickle",
    "pigeon", "pillow", "pine", "pirate", "pizza", "planet", "plum", "pocket", "pony", "poppy",
    "potato", "pretzel", "puffin", "pumpkin", "puppet", "quartz", "quilt", "rabbit", "raccoon",
    "radish", "rainbow", "raven", "ribbon", "river", "robin", "rocket", "saddle", "salmon",
    "sandal", "scarf", "seagull", "shovel", "silver", "skater", "sled", "snail", "sparrow",
    "spider", "spinach", "sponge", "squirrel", "statue", "stove", "summit", "sunset", "swan",
    "teapot", "tiger", "tomato", "tractor", "trumpet", "tulip", "turkey", "turtle", "tuxedo",
    "umbrella", "valley", "velvet", "violin", "volcano", "waffle", "walnut", "walrus", "whale",
    "whistle", "willow", "window", "wizard", "yogurt", "zebra", "zipper",
];

/// The byte a word stands for, ignoring case; `None` for a word not on the list.
pub(super) fn index_of(word: &str) -> Option<u8> {
    let word = word.to_ascii_lowercase();
    WORDS
        .binary_search(&word.as_str())
        .ok()
        .and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_distinct_and_plain() {
        assert!(WORDS.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        assert!(
            WORDS
                .iter()
                .all(|w| (3..=8).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase()))
        );
        for (i, word) in WORDS.iter().enumerate() {
            assert_eq!(index_of(&word.to_uppercase()).map(usize::from), Some(i));
        }
        assert_eq!(index_of("zzz"), None);
    }
}
