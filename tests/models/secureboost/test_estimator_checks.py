"""scikit-learn's estimator contract, with the mock HE kit and in-process parties."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from hefl.models.secureboost import SecureBoostClassifier, SecureBoostRegressor

_COMMON = dict(n_estimators=3, max_depth=3, he="mock", transport="threads", random_state=0)

@parametrize_with_checks(
    [SecureBoostClassifier(**_COMMON), SecureBoostRegressor(**_COMMON)],
)
def test_sklearn_contract(estimator, check):
    check(estimator)
