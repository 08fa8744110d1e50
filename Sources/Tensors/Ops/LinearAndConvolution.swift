/// Dense and convolutional layers' ops and their gradients.

extension Tensor {
    /// y = x W^T + b over the last dimension. x [..., in], weight [out, in], bias [out].
    public func linear(weight: Tensor, bias: Tensor?) -> Tensor {
        let inFeatures = shape.last!, outFeatures = weight.shape[0]
        require(weight.shape == [outFeatures, inFeatures],
                "linear: weight \(weight.shape) does not take \(inFeatures) input features")
        let rows = count / inFeatures
        let out = Storage(uninitializedCount: rows * outFeatures)
        let flops = 2 * Double(rows * inFeatures * outFeatures)
        Profiler.measure("linear", flops: flops) {
            // each core writes the bias into its own rows, then adds their product onto them (beta 1)
            let px = SharedPointer(pointer), pw = SharedPointer(weight.pointer), py = SharedPointer(out.pointer)
            let pb = bias.map { SharedPointer($0.pointer) }
            parallelFor(rows, cost: inFeatures * outFeatures) { range in
                let y = py + range.lowerBound * outFeatures
                if let pb { for r in 0..<range.count { (y + r * outFeatures).update(from: pb.base, count: outFeatures) } }
                gemm(transposeB: true, m: range.count, n: outFeatures, k: inFeatures, a: px + range.lowerBound * inFeatures,
                     lda: inFeatures, b: pw.base, ldb: inFeatures, beta: pb == nil ? 0 : 1, c: y, ldc: outFeatures)
            }
        }
        let nx = node, nw = weight.node, nb = bias?.node
        let x = nw != nil ? storage : nil, w = nx != nil ? weight.storage : nil
        var outShape = shape
        outShape[outShape.count - 1] = outFeatures
        let backwardFlops = flops * Double((nx == nil ? 0 : 1) + (nw == nil ? 0 : 1))
        return Tensor.result(outShape, out, inputs: [self, weight] + (bias.map { [$0] } ?? []), op: "linear",
                             backwardFlops: backwardFlops) { g in
            if let nx {  // dx = dy W
                let (dx, add) = nx.gradientForWriting()
                parallelGemm(m: rows, n: inFeatures, k: outFeatures, a: g.pointer, lda: outFeatures,
                             b: w!.pointer, ldb: inFeatures, beta: add ? 1 : 0, c: dx.pointer, ldc: inFeatures)
            }
            if let nw {  // dW = dy^T x
                parallelGemm(transposeA: true, m: outFeatures, n: inFeatures, k: rows, a: g.pointer, lda: outFeatures,
                             b: x!.pointer, ldb: inFeatures, beta: 1, c: nw.gradientStorage().pointer, ldc: inFeatures)
            }
            if let nb {
                addColumnSums(g.pointer, rows: rows, columns: outFeatures, into: nb.gradientStorage().pointer)
            }
        }
    }

    /// 2-D convolution. self [N, C, H, W], weight [O, C, k, k], bias [O]. Padding is
    /// (top, left, bottom, right); `padding: 1` pads all sides by one.
    public func conv2d(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0) -> Tensor {
        conv2d(weight: weight, bias: bias, stride: stride, padding: (padding, padding, padding, padding))
    }

    /// conv(self, weight) + bias + shift + residual, the three adds made in the pass that writes
    /// the output: `shift` [N, O] per image and channel (a resnet's projected time embedding),
    /// `residual` [N, O, Ho, Wo] (its skip connection).
    public func conv2d(weight: Tensor, bias: Tensor?, stride: Int = 1,
                       padding: (top: Int, left: Int, bottom: Int, right: Int),
                       shift: Tensor? = nil, residual: Tensor? = nil) -> Tensor {
        require(rank == 4 && weight.rank == 4 && weight.shape[1] == shape[1] && weight.shape[2] == weight.shape[3],
                "conv2d: input \(shape) and weight \(weight.shape) do not match")
        let g = ConvGeometry(batch: shape[0], channels: shape[1], height: shape[2], width: shape[3],
                             outChannels: weight.shape[0], kernel: weight.shape[2], stride: stride,
                             padTop: padding.top, padLeft: padding.left,
                             padBottom: padding.bottom, padRight: padding.right)
        let outShape = [g.batch, g.outChannels, g.outHeight, g.outWidth]
        require(shift == nil || shift!.count == g.batch * g.outChannels,
                "conv2d: shift \(shift!.shape) is not one value per image and output channel [\(g.batch), \(g.outChannels)]")
        require(residual == nil || residual!.shape == outShape, "conv2d: residual \(residual!.shape) is not the output's \(outShape)")
        let out = Storage(uninitializedCount: g.batch * g.outChannels * g.outPixels)
        if let residual { Tensors.copy(residual.pointer, to: out.pointer, count: out.count) }
        let op = "conv\(g.kernelHeight)x\(g.kernelWidth)"
        Profiler.noteConvolution(g)
        Profiler.measure(op, flops: g.flops) {
            conv2dForward(g, x: pointer, weight: weight.pointer, bias: bias?.pointer, shift: shift?.pointer,
                          accumulate: residual != nil, y: out.pointer)
        }
        let nx = node, nw = weight.node, nb = bias?.node, ns = shift?.node, nr = residual?.node
        let x = storage, w = weight.storage
        let backwardFlops = g.flops * Double((nx == nil ? 0 : 1) + (nw == nil ? 0 : 1))
        let inputs = [self, weight] + [bias, shift, residual].compactMap { $0 }
        return Tensor.result(outShape, out, inputs: inputs, op: op, backwardFlops: backwardFlops) { grad in
            if nx != nil || nw != nil || nb != nil {
                let dx = nx?.gradientForWriting()
                conv2dBackward(g, x: x.pointer, weight: w.pointer, dy: grad.pointer,
                               dx: dx?.storage.pointer, dweight: nw?.gradientStorage().pointer,
                               dbias: nb?.gradientStorage().pointer, accumulateDx: dx?.accumulate ?? true)
            }
            if let ns {  // d shift[n, o] = the sum of dy over the plane
                let d = ns.gradientStorage().pointer, pixels = g.outPixels
                for plane in 0..<g.batch * g.outChannels { d[plane] += Tensors.sum(grad.pointer + plane * pixels, count: pixels) }
            }
            nr?.addGradient(grad.pointer)
        }
    }
}
