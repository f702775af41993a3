"""k-means on the 8-device mesh against scikit-learn (inertia within 1% on the same vectors) and a NumPy
re-derivation of the assignment; empty clusters, determinism and bad input."""

import numpy as np
import pytest

from aya_jax import sharding
from aya_jax.curation import clustering
from configs.common import default_rules


@pytest.fixture(scope="module")
def mesh_and_rules():
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    return mesh, sharding.normalize_rules(default_rules(), mesh)


def _blobs(n=3000, d=24, centers=20, seed=0):
    """Gaussian blobs that overlap (spread 1.5 around centres drawn with sd 4): several local optima."""
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=4.0, size=(centers, d))
    return (c[rng.integers(0, centers, n)] + rng.normal(scale=1.5, size=(n, d))).astype(np.float32)


def _np_assign(x, centroids):
    d2 = ((x[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1)
    return d2.argmin(1), d2.min(1), d2


def test_inertia_within_one_percent_of_scikit_learn(mesh_and_rules):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    mesh, rules = mesh_and_rules
    x = _blobs(n=3001)  # odd: padding rows on the 8-device mesh
    ours = clustering.kmeans(x, 16, restarts=3, iterations=100, seed=1, mesh=mesh, rules=rules)
    ref = sklearn_cluster.KMeans(16, init="k-means++", n_init=3, max_iter=100, random_state=1).fit(x)
    assert ours.inertia <= ref.inertia_ * 1.01, (ours.inertia, ref.inertia_)
    # our reported inertia is the sum of squared distances to the centroids we return (float64 NumPy)
    index, dist, d2 = _np_assign(x, ours.centroids)
    assert ours.inertia == pytest.approx(dist.sum(), rel=1e-5)
    # assignments: the NumPy argmin wherever the two nearest centroids are not within fp32 rounding
    sorted_d2 = np.sort(d2, axis=1)
    clear = sorted_d2[:, 1] - sorted_d2[:, 0] > 1e-3 * (1 + sorted_d2[:, 0])
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(ours.assignments[clear], index[clear])
    np.testing.assert_array_equal(ours.sizes, np.bincount(ours.assignments, minlength=16))
    assert ours.converged and ours.iterations < 100


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_the_result_is_a_fixed_point_of_scikit_learns_lloyd(mesh_and_rules, init):
    """Started from our centroids, scikit-learn's Lloyd iterations barely move them: ours converged."""
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    mesh, rules = mesh_and_rules
    x = _blobs(n=2000, seed=2)
    ours = clustering.kmeans(x, 12, init=init, tol=1e-6, iterations=300, seed=0, mesh=mesh, rules=rules)
    ref = sklearn_cluster.KMeans(12, init=ours.centroids, n_init=1, max_iter=300, tol=1e-6).fit(x)
    assert ref.inertia_ == pytest.approx(ours.inertia, rel=1e-4)
    np.testing.assert_allclose(ref.cluster_centers_, ours.centroids, atol=1e-3)


def test_same_result_with_and_without_a_mesh_and_deterministic(mesh_and_rules):
    mesh, rules = mesh_and_rules
    x = _blobs(n=1000, seed=3)
    a = clustering.kmeans(x, 8, seed=5, mesh=mesh, rules=rules)
    b = clustering.kmeans(x, 8, seed=5, mesh=mesh, rules=rules)
    c = clustering.kmeans(x, 8, seed=5, chunk=128)  # one device, distances 128 rows at a time
    np.testing.assert_array_equal(a.assignments, b.assignments)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_allclose(c.centroids, a.centroids, rtol=0, atol=1e-4)
    assert c.inertia == pytest.approx(a.inertia, rel=1e-5)


def test_training_sample_then_every_vector_assigned():
    x = _blobs(n=4000, seed=4)
    out = clustering.kmeans(x, 10, sample_per_centroid=50, seed=0)  # fitted on 500 of 4000
    assert out.assignments.shape == (4000,) and out.sizes.sum() == 4000
    np.testing.assert_array_equal(out.assignments, _np_assign(x, out.centroids)[0])


def test_empty_clusters_move_to_the_farthest_vectors():
    # 12 vectors in 3 tight groups, k = 5 with every centroid seeded on group 0 (random init can only draw
    # vectors): Lloyd's step leaves clusters empty and they must take the farthest vectors, ending with 3
    # groups split among 5 centroids and no empty cluster.
    x = np.concatenate([np.zeros((4, 2)), np.full((4, 2), 10.0), np.full((4, 2), -10.0)]).astype(np.float32)
    x += np.random.default_rng(0).normal(scale=0.01, size=x.shape).astype(np.float32)
    moved = clustering._relocate_empty(
        np.zeros((5, 2), np.float32), np.array([12.0, 0, 0, 0, 0]), np.sum(x**2, axis=1), x
    )
    far = np.argsort(-np.sum(x**2, axis=1), kind="stable")[:4]
    np.testing.assert_array_equal(moved[1:], x[far])
    out = clustering.kmeans(x, 5, init="random", seed=0)
    assert (out.sizes > 0).all() and out.inertia < 0.01


def test_bad_input_names_the_culprit():
    x = _blobs(n=50)
    with pytest.raises(ValueError, match="k=51 must be between 1 and the number of vectors"):
        clustering.kmeans(x, 51)
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="vector 7 is not finite"):
        clustering.kmeans(bad, 4)
    with pytest.raises(ValueError, match="init 'forgy'"):
        clustering.kmeans(x, 4, init="forgy")
    with pytest.raises(ValueError, match="float"):
        clustering.kmeans(np.zeros((5, 2), np.int32), 2)
