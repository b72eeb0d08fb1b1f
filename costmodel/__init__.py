"""Learned cost model: kernel features, measured datasets, XGBoost regressor, and the policy
interface passes ask for decisions. Only the package exists so far."""
