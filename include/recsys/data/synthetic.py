"""Fast, deterministic synthetic e-commerce behaviour events in the public REES46 layout.

The generator writes a landing zone the pipeline can ingest exactly like the real dataset::

    OUT/raw/events/ds=YYYY-MM-DD/events.csv   one folder per day, REES46 columns and formats
    OUT/raw/catalog/products.csv               every product, with a title and a description

The data is built to carry learnable structure, so that every model family has something of its
own to find and a hybrid has something to combine:

* content: a 3-level category tree, brands per leaf, lognormal prices, and titles/descriptions
  whose words carry the category, the brand and per-leaf feature words (TF-IDF sees them);
  users prefer a few top-level categories, leaves and brands, and have a price sensitivity;
* collaborative: hidden "style" clusters that cut across categories and brands and never appear
  in the text, shared by groups of users, so co-preference exists that content cannot explain;
* sequence: a product -> related-products map (accessories of a main product, "next in series",
  close alternatives); within a session and from one session to the user's next, the next item
  often follows that map from the previous one;
* time: users with long-tailed activity who join over the period (cold users), products released
  in the last days (cold items), slow taste drift, weekend peaks and a slight upward trend.

Everything is vectorised with numpy (loops run over categories, leaves or walk depth, never over
events or sessions), and every random draw comes from ``numpy.random.default_rng`` streams spawned
from the configured seed: the same configuration (including ``end_date``) gives byte-identical files.

Run it as ``python -m recsys.data.synthetic --users 3000 --products 400 --days 14 --seed 42 --out ./data``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.constants import CATALOG_COLUMNS, EVENT_TYPES, RAW_COLUMNS

# ---------------------------------------------------------------------------------------------
# The taxonomy: top-level categories and their leaves
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TopLevel:
    name: str
    share: float  # share of shopping interest before user tastes are applied
    words: tuple[str, ...]  # generic words every description of the category carries


@dataclass(frozen=True)
class _Leaf:
    code: str  # dotted REES46-style category_code; the first part names the top-level category
    noun: str  # what the product is called in its title
    brands: tuple[str, ...]
    median_price: float
    features: tuple[str, ...]  # the per-leaf vocabulary descriptions draw from
    variants: tuple[str, ...] = ()  # size/capacity/power words that end up in titles
    weight: float = 1.0  # interest within its top-level category
    accessories: tuple[str, ...] = ()  # leaves whose products are bought after this leaf's products

    @property
    def top_level(self) -> str:
        return self.code.split(".")[0]


_TOP_LEVELS = (
    _TopLevel("electronics", 0.28, ("gadget", "digital", "electronics")),
    _TopLevel("computers", 0.16, ("computer", "pc", "office")),
    _TopLevel("appliances", 0.15, ("home", "appliance", "household")),
    _TopLevel("apparel", 0.12, ("fashion", "clothing", "wear")),
    _TopLevel("furniture", 0.08, ("interior", "furniture", "home")),
    _TopLevel("sport", 0.08, ("sport", "outdoor", "active")),
    _TopLevel("kids", 0.07, ("kids", "children", "baby")),
    _TopLevel("construction", 0.06, ("tools", "repair", "diy")),
)

_SIZES = ("S", "M", "L", "XL")

_LEAVES = (
    # electronics
    _Leaf("electronics.smartphone", "smartphone", ("samsung", "apple", "xiaomi", "huawei", "oppo"), 320,
          ("camera", "battery", "amoled", "display", "dual-sim", "5g", "fast-charging", "octa-core", "nfc", "selfie"),
          ("64GB", "128GB", "256GB"), 3.0,
          ("electronics.accessories.case", "electronics.accessories.charger", "electronics.audio.headphone",
           "electronics.clocks")),
    _Leaf("electronics.audio.headphone", "headphones", ("sony", "jbl", "apple", "sennheiser", "xiaomi"), 80,
          ("wireless", "bluetooth", "noise-cancelling", "bass", "earbuds", "microphone", "charging-case", "hi-fi"),
          ("in-ear", "over-ear", "on-ear"), 2.0),
    _Leaf("electronics.audio.speaker", "speaker", ("jbl", "sony", "marshall", "xiaomi", "harman"), 120,
          ("portable", "waterproof", "bass", "bluetooth", "party", "stereo", "voice-assistant", "subwoofer"),
          ("10W", "20W", "40W")),
    _Leaf("electronics.video.tv", "TV", ("samsung", "lg", "sony", "philips", "xiaomi"), 600,
          ("4k", "uhd", "hdr", "smart-tv", "oled", "qled", "wall-mount", "hdmi", "dolby"),
          ("43in", "50in", "55in", "65in"), 1.5, ("electronics.audio.speaker",)),
    _Leaf("electronics.accessories.case", "phone case", ("spigen", "samsung", "apple", "otterbox", "xiaomi"), 18,
          ("silicone", "shockproof", "transparent", "leather", "slim", "magnetic", "wallet", "protective"),
          ("6.1in", "6.7in")),
    _Leaf("electronics.accessories.charger", "charger", ("anker", "samsung", "apple", "xiaomi", "baseus"), 25,
          ("usb-c", "fast-charging", "wireless", "power-delivery", "cable", "adapter", "qi", "compact"),
          ("20W", "45W", "65W")),
    _Leaf("electronics.camera.photo", "camera", ("canon", "nikon", "sony", "fujifilm", "panasonic"), 700,
          ("mirrorless", "dslr", "lens", "megapixel", "zoom", "stabilization", "4k-video", "viewfinder", "autofocus"),
          ("24MP", "33MP", "45MP"), 0.7, ("computers.accessories.bag", "electronics.accessories.charger")),
    _Leaf("electronics.clocks", "smartwatch", ("apple", "samsung", "garmin", "xiaomi", "huawei"), 200,
          ("fitness", "heart-rate", "gps", "waterproof", "sleep-tracking", "notifications", "strap", "pulse-oximeter"),
          ("40mm", "44mm")),
    # computers
    _Leaf("computers.notebook", "notebook", ("lenovo", "asus", "hp", "acer", "apple"), 900,
          ("intel", "ryzen", "ssd", "ram", "full-hd", "gaming", "ultrabook", "backlit", "thin", "graphics"),
          ("8GB", "16GB", "32GB"), 2.5,
          ("computers.peripherals.mouse", "computers.accessories.bag", "computers.peripherals.keyboard",
           "computers.components.ssd")),
    _Leaf("computers.desktop", "desktop", ("hp", "lenovo", "dell", "asus", "acer"), 800,
          ("tower", "intel", "ryzen", "ssd", "ram", "graphics", "gaming", "office-suite"),
          ("8GB", "16GB", "32GB"), 0.8,
          ("computers.peripherals.monitor", "computers.peripherals.keyboard", "computers.peripherals.mouse")),
    _Leaf("computers.peripherals.monitor", "monitor", ("dell", "lg", "samsung", "asus", "acer"), 250,
          ("ips", "144hz", "curved", "4k", "hdmi", "displayport", "frameless", "eye-care"),
          ("24in", "27in", "32in"), 1.2, ("computers.peripherals.keyboard", "computers.peripherals.mouse")),
    _Leaf("computers.peripherals.mouse", "mouse", ("logitech", "razer", "a4tech", "hp", "xiaomi"), 30,
          ("optical", "wireless", "ergonomic", "dpi", "gaming", "rgb", "silent", "usb")),
    _Leaf("computers.peripherals.keyboard", "keyboard", ("logitech", "razer", "a4tech", "hp", "defender"), 50,
          ("mechanical", "backlit", "wireless", "rgb", "switches", "numpad", "membrane", "ergonomic")),
    _Leaf("computers.accessories.bag", "laptop bag", ("samsonite", "thule", "hp", "dell", "xiaomi"), 45,
          ("padded", "shoulder-strap", "waterproof", "compartment", "nylon", "travel", "sleeve"),
          ("13in", "15.6in", "17in")),
    _Leaf("computers.components.ssd", "SSD drive", ("samsung", "kingston", "crucial", "wd", "adata"), 90,
          ("nvme", "sata", "m2", "read-speed", "tlc", "heatsink", "3d-nand"),
          ("256GB", "512GB", "1TB"), 0.8),
    # appliances
    _Leaf("appliances.kitchen.blender", "blender", ("philips", "bosch", "braun", "moulinex", "kitfort"), 70,
          ("stainless", "smoothie", "jug", "pulse", "ice-crushing", "speeds", "chopper", "immersion"),
          ("600W", "800W", "1000W")),
    _Leaf("appliances.kitchen.coffee_machine", "coffee machine", ("delonghi", "philips", "krups", "nespresso", "bosch"),
          350, ("espresso", "cappuccino", "grinder", "milk-frother", "capsule", "bean", "barista", "pressure"),
          ("15bar", "19bar"), 1.0, ("appliances.kitchen.kettle",)),
    _Leaf("appliances.kitchen.refrigerator", "refrigerator", ("samsung", "lg", "bosch", "indesit", "atlant"), 700,
          ("no-frost", "freezer", "inverter", "energy-efficient", "two-door", "fresh-zone", "quiet"),
          ("300L", "350L", "400L"), 1.3),
    _Leaf("appliances.kitchen.kettle", "kettle", ("tefal", "bosch", "philips", "xiaomi", "polaris"), 35,
          ("electric", "glass", "auto-off", "cordless", "temperature", "boil", "limescale-filter"),
          ("1.5L", "1.7L")),
    _Leaf("appliances.environment.vacuum", "vacuum cleaner", ("dyson", "samsung", "xiaomi", "philips", "karcher"), 250,
          ("cordless", "cyclone", "hepa", "robot", "suction", "bagless", "turbo-brush", "pet-hair"),
          ("400W", "1800W"), 1.3),
    _Leaf("appliances.personal.hair_dryer", "hair dryer", ("philips", "braun", "dyson", "rowenta", "remington"), 50,
          ("ionic", "diffuser", "concentrator", "cool-shot", "ceramic", "foldable", "salon"),
          ("1800W", "2200W")),
    # apparel
    _Leaf("apparel.shoes", "shoes", ("nike", "adidas", "puma", "reebok", "skechers"), 90,
          ("running", "leather", "sneakers", "sole", "cushioning", "lace-up", "breathable", "suede"),
          ("size-40", "size-42", "size-44"), 1.5, ("apparel.tshirt",)),
    _Leaf("apparel.jacket", "jacket", ("columbia", "thenorthface", "zara", "adidas", "nike"), 120,
          ("waterproof", "down", "hooded", "windproof", "insulated", "parka", "zipper", "fleece"),
          _SIZES, 1.0, ("apparel.shoes", "apparel.tshirt")),
    _Leaf("apparel.tshirt", "t-shirt", ("nike", "adidas", "puma", "zara", "uniqlo"), 20,
          ("cotton", "crew-neck", "print", "slim-fit", "oversized", "short-sleeve", "basic", "logo"),
          _SIZES),
    _Leaf("apparel.accessories.backpack", "backpack", ("herschel", "adidas", "nike", "samsonite", "thule"), 60,
          ("zip", "school", "urban", "hiking", "rolltop", "polyester", "bottle-pocket"),
          ("20L", "30L"), 0.7),
    # furniture
    _Leaf("furniture.living_room.sofa", "sofa", ("ikea", "hoff", "askona", "lazurit", "divan"), 600,
          ("corner", "velvet", "fold-out", "cushions", "upholstered", "chaise", "fabric", "recliner"),
          ("2-seat", "3-seat"), 1.0, ("furniture.living_room.cabinet", "furniture.bedroom.pillow")),
    _Leaf("furniture.living_room.cabinet", "cabinet", ("ikea", "hoff", "lazurit", "shatura", "stolline"), 250,
          ("oak", "drawers", "shelves", "glass-doors", "tv-stand", "walnut", "chipboard")),
    _Leaf("furniture.bedroom.bed", "bed", ("ikea", "askona", "ormatek", "hoff", "lazurit"), 500,
          ("double", "king-size", "headboard", "storage", "wooden", "orthopedic", "frame", "slats"),
          ("140x200", "160x200", "180x200"), 1.0, ("furniture.bedroom.pillow",)),
    _Leaf("furniture.bedroom.pillow", "pillow", ("askona", "ormatek", "ikea", "togas", "dargez"), 25,
          ("memory-foam", "hypoallergenic", "down", "orthopedic", "cooling", "cotton-cover", "bamboo"),
          ("50x70", "70x70")),
    # sport
    _Leaf("sport.bicycle", "bicycle", ("stels", "stern", "merida", "trek", "giant"), 450,
          ("mountain", "gears", "aluminium", "disc-brakes", "suspension", "wheels", "shimano", "hardtail"),
          ("26in", "27.5in", "29in"), 1.5, ("sport.accessories.helmet",)),
    _Leaf("sport.accessories.helmet", "helmet", ("giro", "bell", "stern", "met", "abus"), 50,
          ("ventilation", "visor", "adjustable", "lightweight", "cycling", "certified", "shell"),
          _SIZES),
    _Leaf("sport.fitness.yoga_mat", "yoga mat", ("adidas", "reebok", "nike", "starfit", "torneo"), 25,
          ("non-slip", "eco", "pilates", "cushioning", "tpe", "carrying-strap", "exercise"),
          ("4mm", "6mm", "8mm")),
    # kids
    _Leaf("kids.toys", "toy", ("lego", "hasbro", "mattel", "playmobil", "hape"), 30,
          ("building", "blocks", "educational", "doll", "puzzle", "creative", "figures", "playset"),
          ("3+", "6+", "8+"), 1.5),
    _Leaf("kids.carriage", "stroller", ("chicco", "cybex", "britax", "pegperego", "happybaby"), 300,
          ("pram", "foldable", "all-terrain", "canopy", "newborn", "reversible-seat", "lightweight", "basket"),
          (), 1.0, ("kids.toys",)),
    # construction
    _Leaf("construction.tools.drill", "drill", ("bosch", "makita", "dewalt", "metabo", "interskol"), 120,
          ("cordless", "hammer", "brushless", "li-ion", "torque", "chuck", "impact", "battery"),
          ("12V", "18V"), 1.3, ("construction.tools.bit_set",)),
    _Leaf("construction.tools.bit_set", "drill bit set", ("bosch", "makita", "dewalt", "metabo", "zubr"), 20,
          ("titanium", "hss", "masonry", "wood", "metal", "hex-shank", "storage-case"),
          ("10pcs", "25pcs", "50pcs")),
)

_COLORS = ("black", "white", "silver", "blue", "red", "grey", "green", "beige")
_SERIES = ("Pro", "Lite", "Max", "Plus", "Air", "Neo", "Ultra", "Classic", "Sport", "Mini", "Prime", "Nova")
_MARKETING_WORDS = ("new", "popular", "bestseller", "original", "warranty", "sale", "quality", "gift")

# ---------------------------------------------------------------------------------------------
# Behaviour parameters (fixed, not configuration: they define what "the synthetic shop" is)
# ---------------------------------------------------------------------------------------------
_N_STYLES = 6  # hidden taste clusters shared across categories; never written into the text
_STYLE_WEIGHT = 3.0  # logit boost for a user whose style mass sits entirely on the item's style
_POPULARITY_EXPONENT = 1.0  # the "a" in popularity**a
_ZIPF_EXPONENT = 1.0
_NEW_PRODUCT_BOOST = 3.0  # launches get marketing, so cold products do get traffic in their first days
_COLD_PRODUCT_SHARE = 0.05  # released in the last two days
_LATE_PRODUCT_SHARE = 0.05  # released during the earlier days
_LATE_USER_SHARE = 0.2  # users who join after the first day
_CATEGORY_CONCENTRATION = 0.35  # Dirichlet concentration of users' top-level preferences (small: focused)
_TASTE_DRIFT_PER_DAY = 0.015  # how far the top-level preference moves toward its future self each day
_MAX_PICKS_PER_SESSION = 16
_MEAN_PICKS_PER_SESSION = 4.0
_FOLLOW_RELATED_IN_SESSION = 0.5  # chance the next pick of a session follows the related map
_FOLLOW_RELATED_ACROSS_SESSIONS = 0.35  # chance a session opens with an item related to the previous one
_MAX_WALK_DEPTH = 8  # longest unbroken chain of related-map steps
_RELATED_SLOTS = 4
_RELATED_SLOT_WEIGHTS = np.array([0.45, 0.25, 0.18, 0.12])
_EXTRA_VIEWS_MEAN = 0.3
# Funnel targets per 100 views: 8 carts, 2 removes, 3 purchases.
_CARTS_PER_VIEW = 0.08
_REMOVE_GIVEN_CART = 0.25
_PURCHASE_GIVEN_KEPT_CART = 0.5
_CATEGORY_CODE_MISSING_SHARE = 0.03
_BRAND_MISSING_SHARE = 0.04
_HOUR_WEIGHTS = np.array(
    [2, 1, 1, 1, 1, 1, 2, 3, 5, 6, 7, 7, 7, 7, 7, 7, 8, 9, 10, 11, 12, 11, 8, 4], dtype=float
)
_WEEKDAY_TRAFFIC = np.array([1.0, 0.97, 0.98, 1.0, 1.08, 1.32, 1.25])  # Monday .. Sunday
_TRAFFIC_TREND = 0.1  # traffic grows by this share over the generated period
_SECONDS_PER_DAY = 86_400
_BAD_ROW_KINDS = ("event_type", "price", "user_id", "event_time", "product_id")
_SESSION_CHUNK = 4096  # sessions scored at once when sampling products (bounds memory)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``end_date`` is the last day written; ``None`` means yesterday (UTC)."""

    users: int = 3000
    products: int = 400
    days: int = 14
    seed: int = 42
    end_date: dt.date | None = None
    sessions_per_user_day: float = 0.35  # mean for an average-activity user; the defaults give ~90k events
    bad_rows_fraction: float = 0.0  # share of rows made invalid on purpose, to exercise the quarantine

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be at least 1, got {self.users}")
        if self.products < len(_LEAVES):
            raise ValueError(
                f"products must be at least {len(_LEAVES)} (one per leaf category), got {self.products}"
            )
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if not self.sessions_per_user_day > 0:
            raise ValueError(f"sessions_per_user_day must be positive, got {self.sessions_per_user_day}")
        if not 0.0 <= self.bad_rows_fraction < 1.0:
            raise ValueError(f"bad_rows_fraction must be in [0, 1), got {self.bad_rows_fraction}")
        # datetime is a subclass of date but would put a clock time into the day folder names.
        if self.end_date is not None and (
            not isinstance(self.end_date, dt.date) or isinstance(self.end_date, dt.datetime)
        ):
            raise ValueError(f"end_date must be a datetime.date (not a datetime) or None, got {self.end_date!r}")


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate` wrote.

    ``events`` counts every row written, ``bad_rows`` of them invalid on purpose; ``users`` is the number
    of distinct users with at least one event; ``products`` is the size of the catalog.
    """

    out_dir: Path
    start_date: dt.date
    end_date: dt.date
    events: int
    bad_rows: int
    users: int
    products: int
    files: list[Path]

    def describe(self) -> str:
        days = (self.end_date - self.start_date).days + 1
        return (
            f"Generated {self.events:,} events over {days} days ({self.start_date} to {self.end_date}) "
            f"from {self.users:,} active users on {self.products:,} products, {self.bad_rows:,} of them "
            f"bad rows on purpose; wrote {len(self.files) - 1} day files under {self.out_dir / 'raw' / 'events'} "
            f"and the catalog at {self.out_dir / 'raw' / 'catalog' / 'products.csv'}."
        )


def generate(out_dir: Path | str, config: GeneratorConfig = GeneratorConfig()) -> GenerationSummary:
    """Generate the configured events and catalog and write the landing zone under ``out_dir``.

    Day folders in the generated range and the catalog are replaced; other days are left alone.
    """
    out_dir = Path(out_dir)
    end_date = config.end_date or (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))
    start_date = end_date - dt.timedelta(days=config.days - 1)
    # Independent streams per stage, so e.g. the catalog does not change when only users change.
    catalog_seed, users_seed, sessions_seed, events_seed, corruption_seed, ids_seed = np.random.SeedSequence(
        config.seed
    ).spawn(6)

    catalog = _build_catalog(config.products, config.days, np.random.default_rng(catalog_seed))
    users = _build_users(config.users, config.days, catalog, np.random.default_rng(users_seed))
    sessions = _simulate_sessions(config, start_date, catalog, users, np.random.default_rng(sessions_seed))
    events = _expand_events(sessions, catalog, users, np.random.default_rng(events_seed))
    bad_rows = _choose_bad_rows(len(events["day"]), config.bad_rows_fraction, np.random.default_rng(corruption_seed))

    session_ids = _session_uuids(sessions.user.size, np.random.default_rng(ids_seed))
    files = _write_events(out_dir, start_date, config.days, events, session_ids, catalog, users, bad_rows)
    files.append(_write_catalog(out_dir, catalog))

    valid_user_rows = np.ones(len(events["day"]), dtype=bool)
    valid_user_rows[bad_rows.rows[bad_rows.kinds == _BAD_ROW_KINDS.index("user_id")]] = False
    active_users = int(np.unique(events["user"][valid_user_rows]).size)
    return GenerationSummary(
        out_dir=out_dir,
        start_date=start_date,
        end_date=end_date,
        events=int(len(events["day"])),
        bad_rows=int(bad_rows.rows.size),
        users=active_users,
        products=config.products,
        files=files,
    )


# ---------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Catalog:
    product_ids: np.ndarray  # int64, the public ids
    leaf: np.ndarray  # leaf index per product
    brand: np.ndarray  # global brand index; -1 for products sold without a brand
    brand_names: tuple[str, ...]
    style: np.ndarray  # hidden style cluster
    log_popularity: np.ndarray
    relative_log_price: np.ndarray  # log(price / leaf median): what price-sensitive users react to
    price: np.ndarray
    release_day: np.ndarray  # first day index the product can be seen
    related: np.ndarray  # (products, _RELATED_SLOTS) product indices, -1 where empty
    category_id: np.ndarray  # per leaf
    category_code: np.ndarray  # per product, object, "" where hidden
    brand_label: np.ndarray  # per product, object, "" where hidden
    price_text: np.ndarray  # per product, object, 2 decimals
    title: np.ndarray
    description: np.ndarray
    products_by_leaf: tuple[np.ndarray, ...]


def _category_id(code: str) -> int:
    # Stable across seeds, like a real shop's category ids; REES46 ids are 19-digit integers.
    return 2_053_013_550_000_000_000 + zlib.crc32(code.encode()) * 100


def _build_catalog(n_products: int, n_days: int, rng: np.random.Generator) -> _Catalog:
    n_leaves = len(_LEAVES)
    leaf_weights = np.array([leaf.weight for leaf in _LEAVES]) * np.array(
        [_top_level_share(leaf.top_level) / _top_level_leaf_weight(leaf.top_level) for leaf in _LEAVES]
    )
    # One product per leaf first, so every leaf can be browsed; the rest follow leaf interest.
    leaf = np.concatenate(
        [np.arange(n_leaves), rng.choice(n_leaves, size=n_products - n_leaves, p=leaf_weights / leaf_weights.sum())]
    )
    leaf = rng.permutation(leaf)

    brand_names = tuple(sorted({brand for spec in _LEAVES for brand in spec.brands}))
    brand_index = {name: i for i, name in enumerate(brand_names)}
    # Within a leaf, brands follow a Zipf-like share: a market leader and a tail.
    brand_rank_weights = 1.0 / np.arange(1, 6) ** 0.8
    brand_slot = rng.choice(5, size=n_products, p=brand_rank_weights / brand_rank_weights.sum())
    brand = np.array([brand_index[_LEAVES[l].brands[s]] for l, s in zip(leaf, brand_slot)], dtype=np.int64)
    brand_hidden = rng.random(n_products) < _BRAND_MISSING_SHARE

    style = rng.integers(0, _N_STYLES, size=n_products)

    brand_price_level = rng.lognormal(0.0, 0.3, size=len(brand_names))
    median_price = np.array([spec.median_price for spec in _LEAVES])
    price = median_price[leaf] * brand_price_level[brand] * rng.lognormal(0.0, 0.4, size=n_products)
    price = np.maximum(np.round(price, 2), 1.0)
    relative_log_price = np.log(price / median_price[leaf])

    release_day = _release_days(n_products, n_days, rng)
    zipf_rank = rng.permutation(n_products) + 1
    popularity = zipf_rank.astype(float) ** -_ZIPF_EXPONENT
    popularity = popularity * np.where(release_day > 0, _NEW_PRODUCT_BOOST, 1.0)
    log_popularity = np.log(popularity)

    series_choice = rng.integers(0, 2, size=n_products)
    series_pair = rng.integers(0, len(_SERIES), size=(n_leaves, len(brand_names), 2))
    series = series_pair[leaf, brand, series_choice]
    model_number, next_in_series = _number_series(leaf, brand, series, release_day, rng)

    related = _build_related(leaf, brand, style, log_popularity, relative_log_price, next_in_series, rng)

    product_ids = 1_000_000 + np.cumsum(rng.integers(1, 4000, size=n_products)).astype(np.int64)
    category_id = np.array([_category_id(spec.code) for spec in _LEAVES], dtype=np.int64)
    code_hidden = rng.random(n_products) < _CATEGORY_CODE_MISSING_SHARE
    category_code = np.array([_LEAVES[l].code for l in leaf], dtype=object)
    category_code[code_hidden] = ""
    brand_label = np.array([brand_names[b] for b in brand], dtype=object)
    brand_label[brand_hidden] = ""
    brand = np.where(brand_hidden, -1, brand)

    titles, descriptions = _write_texts(leaf, brand_label, series, model_number, rng)
    return _Catalog(
        product_ids=product_ids,
        leaf=leaf,
        brand=brand,
        brand_names=brand_names,
        style=style,
        log_popularity=log_popularity,
        relative_log_price=relative_log_price,
        price=price,
        release_day=release_day,
        related=related,
        category_id=category_id,
        category_code=category_code,
        brand_label=brand_label,
        price_text=np.array([f"{p:.2f}" for p in price], dtype=object),
        title=titles,
        description=descriptions,
        products_by_leaf=tuple(np.flatnonzero(leaf == l) for l in range(n_leaves)),
    )


def _top_level_share(name: str) -> float:
    return next(top.share for top in _TOP_LEVELS if top.name == name)


def _top_level_leaf_weight(name: str) -> float:
    return sum(leaf.weight for leaf in _LEAVES if leaf.top_level == name)


def _release_days(n_products: int, n_days: int, rng: np.random.Generator) -> np.ndarray:
    """Day index each product becomes visible: most from day 0, some mid-period, a few in the last two days."""
    release_day = np.zeros(n_products, dtype=np.int64)
    if n_days < 3:
        return release_day
    draw = rng.random(n_products)
    cold = draw < _COLD_PRODUCT_SHARE
    late = (draw >= _COLD_PRODUCT_SHARE) & (draw < _COLD_PRODUCT_SHARE + _LATE_PRODUCT_SHARE)
    release_day[cold] = rng.integers(n_days - 2, n_days, size=int(cold.sum()))
    release_day[late] = rng.integers(1, n_days - 2, size=int(late.sum())) if n_days > 3 else 1
    return release_day


def _number_series(leaf, brand, series, release_day, rng) -> tuple[np.ndarray, np.ndarray]:
    """Model numbers within (leaf, brand, series), in release order, and each product's successor (-1 if last)."""
    n_products = leaf.size
    tiebreak = rng.random(n_products)
    order = np.lexsort((tiebreak, release_day, series, brand, leaf))
    group_key = (leaf * 10_000 + brand) * 100 + series
    sorted_group = group_key[order]
    group_start = np.maximum.accumulate(np.where(_run_starts(sorted_group), np.arange(n_products), 0))
    # Model numbers start at a random offset per group so titles do not all say "1".
    group_offset = rng.integers(1, 9, size=n_products)
    model_number = np.empty(n_products, dtype=np.int64)
    model_number[order] = np.arange(n_products) - group_start + group_offset[group_start]
    next_in_series = np.full(n_products, -1, dtype=np.int64)
    has_next = np.r_[sorted_group[1:] == sorted_group[:-1], False]
    next_in_series[order[has_next]] = order[np.flatnonzero(has_next) + 1]
    return model_number, next_in_series


def _build_related(leaf, brand, style, log_popularity, relative_log_price, next_in_series, rng) -> np.ndarray:
    """Each product's related products: next in series first, then accessories (or close alternatives).

    Accessories prefer the same brand (compatibility) and the same hidden style, so the map is
    specific to the product, not just to its leaf: a sequence model has item-level transitions to learn.
    """
    n_products = leaf.size
    code_to_leaf = {spec.code: i for i, spec in enumerate(_LEAVES)}
    related = np.full((n_products, _RELATED_SLOTS), -1, dtype=np.int64)
    for leaf_index, spec in enumerate(_LEAVES):
        sources = np.flatnonzero(leaf == leaf_index)
        if sources.size == 0:
            continue
        target_leaves = [code_to_leaf[code] for code in spec.accessories] or [leaf_index]
        candidates = np.flatnonzero(np.isin(leaf, target_leaves))
        score = (
            log_popularity[candidates][None, :]
            + 1.5 * (brand[sources][:, None] == brand[candidates][None, :])
            + 1.0 * (style[sources][:, None] == style[candidates][None, :])
            + rng.gumbel(size=(sources.size, candidates.size))
        )
        if not spec.accessories:
            # Alternatives: similar price matters more than anything for a substitute.
            score -= 2.0 * np.abs(relative_log_price[sources][:, None] - relative_log_price[candidates][None, :])
        score[sources[:, None] == candidates[None, :]] = -np.inf
        score[candidates[None, :] == next_in_series[sources][:, None]] = -np.inf  # it gets its own slot
        n_take = min(_RELATED_SLOTS, candidates.size)
        best = np.argsort(-score, axis=1, kind="stable")[:, :n_take]
        chosen = np.where(np.isfinite(np.take_along_axis(score, best, axis=1)), candidates[best], -1)
        has_next = next_in_series[sources] >= 0
        row = np.full((sources.size, _RELATED_SLOTS), -1, dtype=np.int64)
        row[:, :n_take] = chosen
        # A successor model takes the strongest slot and pushes the weakest accessory out.
        row[has_next, 1:] = row[has_next, :-1]
        row[has_next, 0] = next_in_series[sources[has_next]]
        related[sources] = row
    return related


def _write_texts(leaf, brand_label, series, model_number, rng) -> tuple[np.ndarray, np.ndarray]:
    """Titles like "Samsung Galaxy 7 smartphone 128GB black" and descriptions built from the leaf's vocabulary."""
    n_products = leaf.size
    color = rng.integers(0, len(_COLORS), size=n_products)
    variant_draw = rng.integers(0, 1_000, size=n_products)
    n_features = rng.integers(4, 7, size=n_products)
    feature_draw = rng.random((n_products, 10))
    marketing = rng.integers(0, len(_MARKETING_WORDS), size=n_products)
    top_words = {top.name: top.words for top in _TOP_LEVELS}
    titles = np.empty(n_products, dtype=object)
    descriptions = np.empty(n_products, dtype=object)
    # One pass over products (catalog size, not event count) to format text.
    for i in range(n_products):
        spec = _LEAVES[leaf[i]]
        brand_word = _display_brand(brand_label[i])
        variant = spec.variants[variant_draw[i] % len(spec.variants)] if spec.variants else ""
        words = [brand_word, _SERIES[series[i]], str(model_number[i]), spec.noun, variant, _COLORS[color[i]]]
        titles[i] = " ".join(word for word in words if word)
        feature_order = np.argsort(feature_draw[i, : len(spec.features)])
        features = [spec.features[j] for j in feature_order[: n_features[i]]]
        maker = f" by {brand_word}" if brand_word else ""
        descriptions[i] = (
            f"{spec.noun.capitalize()}{maker}. {' '.join(features)}. "
            f"{' '.join(top_words[spec.top_level])} {_MARKETING_WORDS[marketing[i]]}"
        )
    return titles, descriptions


def _display_brand(brand: str) -> str:
    # Short brand names are acronyms (JBL, LG, HP); longer ones are capitalised words.
    return brand.upper() if len(brand) <= 3 else brand.capitalize()


# ---------------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Users:
    user_ids: np.ndarray
    join_day: np.ndarray
    activity: np.ndarray
    top_level_pref_start: np.ndarray  # (users, top levels)
    top_level_pref_end: np.ndarray  # where the preference drifts to
    leaf_taste: np.ndarray  # (users, leaves) multiplicative taste within a top level
    style: np.ndarray  # (users, styles) hidden taste mixture
    brand_affinity: np.ndarray  # (users, brands + 1); last column is "no brand" (always 0)
    price_sensitivity: np.ndarray


def _build_users(n_users: int, n_days: int, catalog: _Catalog, rng: np.random.Generator) -> _Users:
    n_top = len(_TOP_LEVELS)
    n_brands = len(catalog.brand_names)
    join_day = np.zeros(n_users, dtype=np.int64)
    if n_days > 1:
        late = rng.random(n_users) < _LATE_USER_SHARE
        join_day[late] = rng.integers(1, n_days, size=int(late.sum()))
    # Long-tailed activity with mean 1: a few heavy shoppers, many occasional ones.
    activity_sigma = 1.0
    activity = np.minimum(rng.lognormal(-activity_sigma**2 / 2, activity_sigma, size=n_users), 30.0)

    shares = np.array([top.share for top in _TOP_LEVELS])
    alpha = _CATEGORY_CONCENTRATION * n_top * shares
    pref_start = rng.dirichlet(alpha, size=n_users)
    pref_end = 0.5 * pref_start + 0.5 * rng.dirichlet(alpha, size=n_users)

    leaf_taste = rng.lognormal(0.0, 0.7, size=(n_users, len(_LEAVES)))
    style = rng.dirichlet(np.full(_N_STYLES, 0.4), size=n_users)

    brand_affinity = np.zeros((n_users, n_brands + 1))
    brand_affinity[:, :n_brands] = rng.normal(0.0, 0.5, size=(n_users, n_brands))
    # Two favourite brands each, picked more often among widely sold brands.
    brand_reach = np.bincount(catalog.brand[catalog.brand >= 0], minlength=n_brands) + 1.0
    favourite_keys = np.log(brand_reach)[None, :] + rng.gumbel(size=(n_users, n_brands))
    favourites = np.argpartition(-favourite_keys, 1, axis=1)[:, :2]
    np.put_along_axis(
        brand_affinity, favourites, np.take_along_axis(brand_affinity, favourites, axis=1) + 1.5, axis=1
    )
    price_sensitivity = rng.normal(0.8, 0.5, size=n_users)
    user_ids = 510_000_000 + np.cumsum(rng.integers(1, 20_000, size=n_users)).astype(np.int64)
    return _Users(user_ids, join_day, activity, pref_start, pref_end, leaf_taste, style, brand_affinity, price_sensitivity)


# ---------------------------------------------------------------------------------------------
# Sessions: who shops when, in which leaf, and which products they pick in which order
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sessions:
    user: np.ndarray  # per session, ordered by user then time
    day: np.ndarray
    start_second: np.ndarray  # wished start; shifted earlier later if the session would cross midnight
    pick_session: np.ndarray  # per pick (one product looked at, maybe several events)
    pick_item: np.ndarray


def _simulate_sessions(config, start_date, catalog: _Catalog, users: _Users, rng) -> _Sessions:
    n_days = config.days
    day_index = np.arange(n_days)
    weekday = np.array([(start_date + dt.timedelta(days=int(d))).weekday() for d in day_index])
    traffic = _WEEKDAY_TRAFFIC[weekday] * (1.0 + _TRAFFIC_TREND * day_index / max(n_days - 1, 1))
    rate = config.sessions_per_user_day * users.activity[:, None] * traffic[None, :]
    rate = np.where(day_index[None, :] >= users.join_day[:, None], rate, 0.0)
    sessions_per_user_day = rng.poisson(rate)
    # A user who signs up during the period visits on the day they join.
    joined_late = np.flatnonzero(users.join_day > 0)
    sessions_per_user_day[joined_late, users.join_day[joined_late]] = np.maximum(
        sessions_per_user_day[joined_late, users.join_day[joined_late]], 1
    )

    flat_counts = sessions_per_user_day.ravel()
    session_user = np.repeat(np.repeat(np.arange(config.users), n_days), flat_counts)
    session_day = np.repeat(np.tile(day_index, config.users), flat_counts)
    n_sessions = session_user.size
    hour = rng.choice(24, size=n_sessions, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    start_second = hour * 3600 + rng.integers(0, 3600, size=n_sessions)
    order = np.lexsort((start_second, session_day, session_user))
    session_user, session_day, start_second = session_user[order], session_day[order], start_second[order]

    session_leaf = _choose_session_leaves(session_user, session_day, n_days, catalog, users, rng)
    n_picks = np.minimum(rng.geometric(1.0 / _MEAN_PICKS_PER_SESSION, size=n_sessions), _MAX_PICKS_PER_SESSION)
    pool = _sample_taste_pools(session_user, session_day, session_leaf, n_picks, catalog, users, rng)

    pick_session = np.repeat(np.arange(n_sessions), n_picks)
    pick_position = np.arange(pick_session.size) - np.repeat(np.cumsum(n_picks) - n_picks, n_picks)
    taste_pick = pool[pick_session, pick_position]
    first_session_of_user = _run_starts(session_user)
    pick_item = _walk_related(
        taste_pick, pick_session, pick_position, first_session_of_user, session_day, catalog, rng
    )
    return _Sessions(session_user, session_day, start_second, pick_session, pick_item)


def _choose_session_leaves(session_user, session_day, n_days, catalog: _Catalog, users: _Users, rng) -> np.ndarray:
    """Each session browses one leaf, chosen by the user's (slowly drifting) tastes among leaves with products."""
    top_index = {top.name: i for i, top in enumerate(_TOP_LEVELS)}
    leaf_top = np.array([top_index[spec.top_level] for spec in _LEAVES])
    leaf_share = np.array([spec.weight / _top_level_leaf_weight(spec.top_level) for spec in _LEAVES])
    available = np.zeros((n_days, len(_LEAVES)), dtype=bool)
    for leaf_index, products in enumerate(catalog.products_by_leaf):
        first_release = catalog.release_day[products].min()
        available[first_release:, leaf_index] = True

    drift = np.minimum(_TASTE_DRIFT_PER_DAY * session_day, 1.0)[:, None]
    top_pref = (1.0 - drift) * users.top_level_pref_start[session_user] + drift * users.top_level_pref_end[session_user]
    weights = top_pref[:, leaf_top] * leaf_share[None, :] * users.leaf_taste[session_user] * available[session_day]
    # Dirichlet draws can underflow to all-zero on the open leaves; such a user browses like everyone else.
    no_taste = weights.sum(axis=1) <= 0
    weights[no_taste] = leaf_share[None, :] * available[session_day[no_taste]]
    cumulative = np.cumsum(weights, axis=1)
    target = rng.random(session_user.size) * cumulative[:, -1]
    leaf = (cumulative < target[:, None]).sum(axis=1)
    return np.minimum(leaf, len(_LEAVES) - 1)


def _sample_taste_pools(session_user, session_day, session_leaf, n_picks, catalog: _Catalog, users: _Users, rng):
    """For each session, products of its leaf in the order the user would look at them (no repeats).

    Choice probability is proportional to popularity**a * exp(affinity), affinity combining the hidden
    style, the brand taste and price sensitivity; Gumbel top-k draws the ordered sample in one go.
    """
    n_sessions = session_user.size
    pool = np.full((n_sessions, _MAX_PICKS_PER_SESSION), -1, dtype=np.int64)
    by_leaf = np.argsort(session_leaf, kind="stable")
    bounds = np.searchsorted(session_leaf[by_leaf], np.arange(len(_LEAVES) + 1))
    n_brands = len(catalog.brand_names)
    for leaf_index, products in enumerate(catalog.products_by_leaf):
        leaf_sessions = by_leaf[bounds[leaf_index] : bounds[leaf_index + 1]]
        if leaf_sessions.size == 0:
            continue
        static_logit = _POPULARITY_EXPONENT * catalog.log_popularity[products]
        product_style = catalog.style[products]
        product_brand = np.where(catalog.brand[products] >= 0, catalog.brand[products], n_brands)
        product_price = catalog.relative_log_price[products]
        product_release = catalog.release_day[products]
        for start in range(0, leaf_sessions.size, _SESSION_CHUNK):
            chunk = leaf_sessions[start : start + _SESSION_CHUNK]
            who = session_user[chunk][:, None]
            logit = (
                static_logit[None, :]
                + _STYLE_WEIGHT * users.style[who, product_style[None, :]]
                + users.brand_affinity[who, product_brand[None, :]]
                - users.price_sensitivity[who] * product_price[None, :]
            )
            key = logit + rng.gumbel(size=logit.shape)
            key[product_release[None, :] > session_day[chunk][:, None]] = -np.inf
            n_take = min(int(n_picks[chunk].max()), products.size)
            if n_take < products.size:
                top = np.argpartition(-key, n_take - 1, axis=1)[:, :n_take]
            else:
                top = np.broadcast_to(np.arange(products.size), key.shape).copy()
            top_key = np.take_along_axis(key, top, axis=1)
            ranked = np.argsort(-top_key, axis=1, kind="stable")
            top = np.take_along_axis(top, ranked, axis=1)
            top_key = np.take_along_axis(top_key, ranked, axis=1)
            pool[chunk, :n_take] = np.where(np.isfinite(top_key), products[top], -1)
    # When a leaf has fewer visible products than the session has picks, the user goes back to the first.
    return np.where(pool >= 0, pool, pool[:, :1])


def _walk_related(taste_pick, pick_session, pick_position, first_session_of_user, session_day, catalog: _Catalog, rng):
    """Replace some taste picks by a related product of the previous pick (same session or the user's last one).

    Picks are laid out by user, then session, then position, so "the previous pick" is simply the
    previous array element. A chain of related steps is resolved one depth at a time, all chains at once.
    """
    n_picks = taste_pick.size
    opens_session = pick_position == 0
    follow_chance = np.where(opens_session, _FOLLOW_RELATED_ACROSS_SESSIONS, _FOLLOW_RELATED_IN_SESSION)
    follows = rng.random(n_picks) < follow_chance
    follows &= ~(opens_session & first_session_of_user[pick_session])
    slot = np.searchsorted(np.cumsum(_RELATED_SLOT_WEIGHTS), rng.random(n_picks) * _RELATED_SLOT_WEIGHTS.sum())
    slot = np.minimum(slot, _RELATED_SLOTS - 1)

    index = np.arange(n_picks)
    last_reset = np.maximum.accumulate(np.where(follows, 0, index))
    depth = index - last_reset
    # Break very long chains so browsing returns to taste now and then.
    depth = depth % (_MAX_WALK_DEPTH + 1)
    item = taste_pick.copy()
    pick_day = session_day[pick_session]
    for step in range(1, _MAX_WALK_DEPTH + 1):
        at_step = np.flatnonzero(depth == step)
        if at_step.size == 0:
            break
        candidate = catalog.related[item[at_step - 1], slot[at_step]]
        visible = candidate >= 0
        visible[visible] = catalog.release_day[candidate[visible]] <= pick_day[at_step[visible]]
        # An empty or not-yet-released slot falls back to the taste pick, which starts a new chain.
        item[at_step[visible]] = candidate[visible]
    return item


def _run_starts(values: np.ndarray) -> np.ndarray:
    """True where a run of equal consecutive values begins (works on empty arrays too)."""
    starts = np.ones(values.size, dtype=bool)
    starts[1:] = values[1:] != values[:-1]
    return starts


# ---------------------------------------------------------------------------------------------
# Events: the view -> cart -> remove/purchase funnel of every pick, with timestamps
# ---------------------------------------------------------------------------------------------
def _expand_events(sessions: _Sessions, catalog: _Catalog, users: _Users, rng) -> dict[str, np.ndarray]:
    n_picks = sessions.pick_item.size
    pick_user = sessions.user[sessions.pick_session]
    item = sessions.pick_item
    n_brands = len(catalog.brand_names)
    item_brand = np.where(catalog.brand[item] >= 0, catalog.brand[item], n_brands)
    affinity = (
        _STYLE_WEIGHT * users.style[pick_user, catalog.style[item]]
        + users.brand_affinity[pick_user, item_brand]
        - users.price_sensitivity[pick_user] * catalog.relative_log_price[item]
    )
    # Users cart what fits their taste; normalised so the overall funnel hits its targets.
    cart_weight = np.exp(0.7 * (affinity - affinity.mean())) if n_picks else affinity
    cart_weight = cart_weight / cart_weight.mean() if n_picks else cart_weight
    extra_views = rng.poisson(_EXTRA_VIEWS_MEAN, size=n_picks)
    cart_probability = _CARTS_PER_VIEW * (1.0 + _EXTRA_VIEWS_MEAN) * cart_weight
    carted = rng.random(n_picks) < np.minimum(cart_probability, 0.9)
    removed = carted & (rng.random(n_picks) < _REMOVE_GIVEN_CART)
    purchased = carted & ~removed & (rng.random(n_picks) < _PURCHASE_GIVEN_KEPT_CART)

    n_views = 1 + extra_views
    events_per_pick = n_views + carted + removed + purchased
    event_pick = np.repeat(np.arange(n_picks), events_per_pick)
    rank_in_pick = np.arange(event_pick.size) - np.repeat(np.cumsum(events_per_pick) - events_per_pick, events_per_pick)
    is_view = rank_in_pick < n_views[event_pick]
    is_cart = rank_in_pick == n_views[event_pick]
    after_cart = np.where(removed[event_pick], EVENT_TYPES.index("remove_from_cart"), EVENT_TYPES.index("purchase"))
    event_type = np.where(is_view, EVENT_TYPES.index("view"), np.where(is_cart, EVENT_TYPES.index("cart"), after_cart))

    # Seconds since the previous event of the session: reading a page takes longer than clicking "buy".
    mean_gap = np.array([40.0, 20.0, 30.0, 60.0])[event_type]
    gap = np.floor(5.0 + rng.exponential(1.0, size=event_pick.size) * mean_gap).astype(np.int64)
    event_session = sessions.pick_session[event_pick]
    session_first_event = _run_starts(event_session)
    gap[session_first_event] = 0
    elapsed = np.cumsum(gap)
    session_offset = np.maximum.accumulate(np.where(session_first_event, elapsed, 0))
    elapsed_in_session = elapsed - session_offset

    n_sessions = sessions.user.size
    duration = np.zeros(n_sessions, dtype=np.int64)
    np.maximum.at(duration, event_session, elapsed_in_session)
    # Sessions end before midnight: a late starter simply started a little earlier.
    session_start = np.clip(np.minimum(sessions.start_second, _SECONDS_PER_DAY - 1 - duration), 0, None)
    second = np.minimum(session_start[event_session] + elapsed_in_session, _SECONDS_PER_DAY - 1)

    day = sessions.day[event_session]
    chronological = np.lexsort((second, day))
    return {
        "day": day[chronological],
        "second": second[chronological],
        "event_type": event_type[chronological],
        "item": item[event_pick][chronological],
        "user": sessions.user[event_session][chronological],
        "session": event_session[chronological],
    }


# ---------------------------------------------------------------------------------------------
# Bad rows and writing
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _BadRows:
    rows: np.ndarray  # sorted row indices into the chronological events
    kinds: np.ndarray  # index into _BAD_ROW_KINDS


def _choose_bad_rows(n_events: int, fraction: float, rng) -> _BadRows:
    n_bad = int(round(fraction * n_events))
    rows = np.sort(rng.choice(n_events, size=n_bad, replace=False)) if n_bad else np.zeros(0, dtype=np.int64)
    kinds = rng.integers(0, len(_BAD_ROW_KINDS), size=n_bad)
    return _BadRows(rows.astype(np.int64), kinds)


def _session_uuids(n_sessions: int, rng) -> np.ndarray:
    """Random version-4 UUID strings, formatted without a Python loop."""
    raw = rng.integers(0, 256, size=(n_sessions, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype="S1")
    nibbles = np.empty((n_sessions, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    chars = hex_digits[nibbles]
    dashed = np.full((n_sessions, 36), b"-", dtype="S1")
    dashed[:, np.r_[0:8, 9:13, 14:18, 19:23, 24:36]] = chars
    return np.ascontiguousarray(dashed).view("S36").ravel().astype(str).astype(object)


def _clock_texts() -> np.ndarray:
    seconds = np.arange(_SECONDS_PER_DAY)
    return np.array(
        [f"{h:02d}:{m:02d}:{s:02d} UTC" for h, m, s in zip(seconds // 3600, seconds // 60 % 60, seconds % 60)],
        dtype=object,
    )


def _write_events(out_dir, start_date, n_days, events, session_ids, catalog: _Catalog, users: _Users, bad_rows) -> list[Path]:
    events_root = out_dir / "raw" / "events"
    clock = _clock_texts()
    type_names = np.array(EVENT_TYPES, dtype=object)
    day_bounds = np.searchsorted(events["day"], np.arange(n_days + 1))
    files = []
    for day_index in range(n_days):
        date = start_date + dt.timedelta(days=day_index)
        lo, hi = day_bounds[day_index], day_bounds[day_index + 1]
        item = events["item"][lo:hi]
        frame = pd.DataFrame(
            {
                "event_time": (date.isoformat() + " ") + clock[events["second"][lo:hi]],
                "event_type": type_names[events["event_type"][lo:hi]],
                "product_id": catalog.product_ids[item],
                "category_id": catalog.category_id[catalog.leaf[item]],
                "category_code": catalog.category_code[item],
                "brand": catalog.brand_label[item],
                "price": catalog.price_text[item],
                "user_id": users.user_ids[events["user"][lo:hi]],
                "user_session": session_ids[events["session"][lo:hi]],
            },
            columns=list(RAW_COLUMNS),
        )
        day_bad = (bad_rows.rows >= lo) & (bad_rows.rows < hi)
        if day_bad.any():
            _corrupt(frame, bad_rows.rows[day_bad] - lo, bad_rows.kinds[day_bad])
        folder = events_root / f"ds={date.isoformat()}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        path = folder / "events.csv"
        frame.to_csv(path, index=False, lineterminator="\n")
        files.append(path)
    return files


def _corrupt(frame: pd.DataFrame, rows: np.ndarray, kinds: np.ndarray) -> None:
    """Make the given rows invalid in the ways real feeds break, one way per row."""
    for kind_index, kind in enumerate(_BAD_ROW_KINDS):
        target = rows[kinds == kind_index]
        if target.size == 0:
            continue
        if kind == "event_type":
            frame.loc[target, "event_type"] = "click"
        elif kind == "price":
            frame.loc[target, "price"] = "-" + frame.loc[target, "price"]
        elif kind == "user_id":
            frame["user_id"] = frame["user_id"].astype(object)
            frame.loc[target, "user_id"] = ""
        elif kind == "event_time":
            frame.loc[target, "event_time"] = "not-a-date"
        elif kind == "product_id":
            frame["product_id"] = frame["product_id"].astype(object)
            frame.loc[target, "product_id"] = "abc"


def _write_catalog(out_dir: Path, catalog: _Catalog) -> Path:
    path = out_dir / "raw" / "catalog" / "products.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(catalog.product_ids, kind="stable")
    frame = pd.DataFrame(
        {
            "product_id": catalog.product_ids[order],
            "title": catalog.title[order],
            "description": catalog.description[order],
            "category_code": catalog.category_code[order],
            "brand": catalog.brand_label[order],
            "price": catalog.price_text[order],
        },
        columns=list(CATALOG_COLUMNS),
    )
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--end-date must be YYYY-MM-DD, got {text!r}") from exc


def main(argv: list[str] | None = None) -> int:
    defaults = GeneratorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m recsys.data.synthetic",
        description="Write synthetic REES46-layout events and a product catalog into a landing zone.",
    )
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--products", type=int, default=defaults.products)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=Path("data"), help="data dir; files go under OUT/raw/")
    parser.add_argument("--end-date", type=_parse_date, default=None, help="last day generated (default: yesterday UTC)")
    parser.add_argument("--sessions-per-user-day", type=float, default=defaults.sessions_per_user_day)
    parser.add_argument("--bad-rows-fraction", type=float, default=defaults.bad_rows_fraction)
    args = parser.parse_args(argv)
    try:
        config = GeneratorConfig(
            users=args.users,
            products=args.products,
            days=args.days,
            seed=args.seed,
            end_date=args.end_date,
            sessions_per_user_day=args.sessions_per_user_day,
            bad_rows_fraction=args.bad_rows_fraction,
        )
    except ValueError as exc:
        parser.error(str(exc))
    summary = generate(args.out, config)
    print(summary.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
