import Testing
import Tensors
import TestSupport

@Suite struct TensorTests {
    @Test func sliceAndJoinAlongTheBatch() {
        let x = Tensor(shape: [3, 2], [1, 2, 3, 4, 5, 6])
        #expect(x.slice(1..<3).shape == [2, 2] && x.slice(1..<3).scalars == [3, 4, 5, 6])
        let joined = Tensor.joined([x.slice(2..<3), x.slice(0..<1)])
        #expect(joined.shape == [2, 2] && joined.scalars == [5, 6, 1, 2])
        #expect(Tensor.joined([x.slice(0..<1), x.slice(1..<3)]).scalars == x.scalars)
    }

    @Test func reshapeSharesStorageAndInfersOneDimension() {
        let x = Tensor(shape: [2, 3, 4], repeating: 1)
        let y = x.reshaped([6, -1])
        #expect(y.shape == [6, 4])
        y.pointer[0] = 7
        #expect(x.pointer[0] == 7)
    }
}
