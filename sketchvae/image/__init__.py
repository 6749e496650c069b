"""Image VAEs on MNIST, split by stage like the sketch side and sharing its KL code and checkpoints.

* :mod:`sketchvae.image.data`      IDX files (read / write / validate), download + verify, binarised batches
* :mod:`sketchvae.image.models`    MLP / conv / class-conditional VAEs (kind ``"image_vae"``), ELBO terms
* :mod:`sketchvae.image.evaluate`  test ELBO and the importance-weighted log p(x) (IWAE bound, k up to 5000)
* :mod:`sketchvae.image.train`     training loop: run folder, best / last checkpoints, exact resume
* :mod:`sketchvae.image.render`    PNG grids and strips (numpy + pillow)

The command line is ``sketchvae mnist ...`` (:mod:`sketchvae.cli.mnist`).
"""
