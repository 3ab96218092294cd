import numpy as np

import convlab as cl


def test_book_example(backend):
    X = backend.asarray(np.arange(9, dtype=np.float32).reshape(3, 3), "float32")
    K = backend.asarray(np.array([[0, 1], [2, 3]], dtype=np.float32), "float32")
    Y = cl.corr2d(X, K)
    assert backend.is_tensor(Y) or backend.name == "numpy"
    np.testing.assert_array_equal(backend.to_numpy(Y), [[19, 25], [37, 43]])
