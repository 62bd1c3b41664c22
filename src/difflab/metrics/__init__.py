"""Sample-quality metrics: FID / KID / IS on Inception or learned features
(`quality`, `features`) and sample distances for low-dimensional data (`distances`:
sliced Wasserstein, MMD)."""
from .distances import mmd, sliced_wasserstein
from .features import (
    InceptionFeatures,
    LearnedFeatures,
    MissingWeightsError,
    extract,
    find_inception_weights,
    train_feature_net,
)
from .quality import (
    FeatureStats,
    feature_id,
    fid,
    fid_floor,
    frechet_distance,
    inception_score,
    kid,
    protocol_key,
    reference_stats,
    sample_quality,
)
